"""runs.py and checkpoints.py's finders: the one atomic write, the one numbering of files and folders, and the
checkpoints that a path names."""

import os

import pytest
from matplotlib.figure import Figure

from lightning_diffusion.checkpoints import checkpoint_named
from lightning_diffusion.runs import (
    checkpoints_in,
    free_path,
    next_numbered,
    numbered,
    resumable_checkpoints,
    save_figure,
    write_atomically,
)


def test_a_failed_write_leaves_neither_a_partial_file_nor_its_temporary(tmp_path):
    path = tmp_path / "run" / "metrics_validate.json"

    def half(file):
        file.write(b'{"val/')
        raise KeyboardInterrupt  # a Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, half)
    assert list(path.parent.iterdir()) == []
    assert write_atomically(path, '{"val/swd": 1.0}') == path and path.read_text() == '{"val/swd": 1.0}'

    def full(file):
        file.write(b"{")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(path, full)  # the file it would replace stays whole
    assert path.read_text() == '{"val/swd": 1.0}' and [p.name for p in path.parent.iterdir()] == [path.name]


def test_figures_are_written_whole_and_never_overwritten(tmp_path):
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    path = save_figure(fig, tmp_path / "plots" / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_figure(fig, path)


def test_files_and_folders_are_numbered_one_way(tmp_path):
    assert next_numbered(tmp_path, "eval_{}") == tmp_path / "eval_0"
    for name in ("eval_0", "eval_3", "eval_x", "eval_10b"):
        (tmp_path / name).mkdir()
    (tmp_path / "eval_7.txt").touch()
    assert numbered(tmp_path, "eval_{}") == {0: tmp_path / "eval_0", 3: tmp_path / "eval_3"}
    assert next_numbered(tmp_path, "eval_{}") == tmp_path / "eval_4"  # one above the highest, as version_N
    assert numbered(tmp_path / "missing", "compare_{}") == {}
    samples = tmp_path / "samples.npz"
    assert free_path(samples) == samples
    samples.touch()
    assert free_path(samples) == tmp_path / "samples-1.npz"
    (tmp_path / "samples-1.npz").touch()
    assert free_path(samples) == tmp_path / "samples-2.npz"


def test_the_checkpoints_a_path_names(tmp_path):
    root = tmp_path / "moons"
    assert resumable_checkpoints(root) == [] and checkpoint_named(root) is None

    def write(relative, mtime):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))
        return path

    epoch = write("version_0/checkpoints/epoch=9-step=90.ckpt", 100)
    (root / "version_0/checkpoints/last.ckpt").symlink_to("epoch=9-step=90.ckpt")
    interrupted = write("version_1/checkpoints/interrupted.ckpt", 200)
    best = write("version_1/checkpoints/best-epoch=001.ckpt", 300)  # not a resume point
    (root / "version_2/checkpoints").mkdir(parents=True)
    (root / "version_2/checkpoints/last.ckpt").symlink_to("gone.ckpt")  # a link whose target was deleted
    assert resumable_checkpoints(root) == [interrupted, root / "version_0/checkpoints/last.ckpt"]
    hpc = write("hpc_ckpt_1.ckpt", 250)  # Lightning's SLURM requeue checkpoint, in <output_dir>/<experiment>
    assert resumable_checkpoints(root)[0] == hpc
    os.utime(epoch, (400, 400))  # the link's target decides
    assert resumable_checkpoints(root)[0] == root / "version_0/checkpoints/last.ckpt"

    assert checkpoints_in(root / "version_0") == [root / "version_0/checkpoints/last.ckpt"]
    assert checkpoints_in(root / "version_0", every=True) == [epoch]  # last.ckpt links to it
    assert checkpoints_in(root / "version_1", every=True) == [best, interrupted]
    assert checkpoints_in(best) == [best] and checkpoints_in(root / "nothing.ckpt") == []
    assert checkpoints_in(root) == resumable_checkpoints(root)
    assert checkpoint_named(best) == best  # one candidate is given as it is, to be read (and refused) by its user


def test_a_version_folder_another_run_made_first_moves_the_claim_on(tmp_path, monkeypatch):
    """Two runs that count the versions at the same moment: the one whose mkdir comes second takes the next number."""
    from lightning_diffusion import runs

    real = runs.next_numbered

    def raced(folder, pattern, first=0):  # another run makes the folder between our count and our mkdir
        path = real(folder, pattern, first)
        if path.name == "version_0" and not path.exists():
            path.mkdir(parents=True)
            return path
        return path

    monkeypatch.setattr(runs, "next_numbered", raced)
    assert runs.claim_numbered(tmp_path / "moons", "version_{}").name == "version_1"
    assert sorted(p.name for p in (tmp_path / "moons").iterdir()) == ["version_0", "version_1"]
