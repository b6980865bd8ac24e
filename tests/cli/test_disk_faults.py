"""Faults of the disk and the machine, through the real CLI in a child process: a full disk ends the fit in one line
of its own, with every checkpoint written still loadable and `--ckpt_path last` resuming; a SIGKILL inside a
checkpoint's write leaves the previous checkpoint (never a partial file) under the final name, and resume works."""

import os
import subprocess
import sys

import pytest
from conftest import REPO
from helpers.checkpoints import load
from helpers.stop_signals import SMALL

from lightning_diffusion.runs import fit_finished

pytestmark = pytest.mark.slow

FIT = [sys.executable, "-m", "lightning_diffusion", "fit", "--config", str(REPO / "configs/moons.yaml"), *SMALL]
ENV = {**os.environ, "LIGHTNING_DIFFUSION_DEBUG": ""}


def run(command, timeout=240):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=ENV)


def checkpoints(folder):
    return sorted(path for path in folder.rglob("*") if path.parent.name == "checkpoints")


def assert_all_load(folder):
    found = checkpoints(folder)
    assert found and all(not path.name.startswith(".") for path in found), found  # no temporary left behind
    for path in found:
        load(path)  # raises on a truncated file


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mounts a tmpfs of the given size (`mount_tmpfs("8m")`), a filesystem of its own as /scratch or a network disk
    is (the system's temporary folder is elsewhere); unmounted after the test."""
    mounted = []

    def mount(size):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0 or run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]).returncode:
            pytest.skip("needs root to mount a tmpfs")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        run(["umount", "-l", str(folder)])


@pytest.fixture
def small_disk(mount_tmpfs):
    """An 8 MB disk: the first epoch's two moons checkpoints (best and latest, about 3 MB each) fit, the next do not."""
    return mount_tmpfs("8m")


def test_a_full_disk_ends_in_one_line_and_leaves_loadable_checkpoints(small_disk):
    fit = [*FIT, "--trainer.max_epochs", "3", "--output_dir", str(small_disk)]
    result = run(fit)
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.rstrip("\n").split("\n")[-1]  # a line of its own: the bar's \r-redraws end before it
    assert last_line.startswith("error: ") and last_line.endswith(
        ": no space left on device: free disk space or choose another --output_dir."
    ), result.stderr[-3000:]
    assert str(small_disk) in last_line
    assert_all_load(small_disk)
    assert load(small_disk / "moons/version_0/checkpoints/last.ckpt")["global_step"] > 0

    run(["mount", "-o", "remount,size=40m", str(small_disk)])  # disk space freed
    resumed = run([*fit, "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_all_load(small_disk)
    assert load(small_disk / "moons/version_1/checkpoints/last.ckpt")["global_step"] == 3 * 4


def test_a_kill_inside_a_checkpoint_write_leaves_the_previous_one(mount_tmpfs):
    out = mount_tmpfs("64m")
    fit = [*FIT, "--trainer.max_epochs", "3", "--output_dir", str(out)]
    # epoch 0 writes best-epoch=000.ckpt and epoch=0-step=4.ckpt; the third checkpoint write is epoch 1's first
    killed = run([sys.executable, str(REPO / "tests/helpers/kill_in_write.py"), "3", *fit[3:]])
    assert killed.returncode == -9, killed.stderr[-3000:]
    folder = out / "moons/version_0/checkpoints"
    names = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
    assert names == ["best-epoch=000.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"], names  # epoch 1's never appeared
    for name in names:
        assert load(folder / name)["global_step"] == 4

    assert fit_finished(out / "moons/version_0") is False  # evaluate says so; no run reuses the folder

    resumed = run([*fit, "--ckpt_path", "last"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load(out / "moons/version_1/checkpoints/last.ckpt")["global_step"] == 3 * 4
    assert fit_finished(out / "moons/version_1") is True
