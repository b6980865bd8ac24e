"""A lost or hung rank under DDP (two CPU ranks, gloo), through the real CLI: the surviving rank ends within
seconds with one line that names the lost rank, the newest checkpoint and `--ckpt_path last`, which finishes the
run; a rank that hangs past --collective_timeout ends the run with one line naming the timeout."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from helpers.checkpoints import load
from helpers.stop_signals import SMALL

pytestmark = pytest.mark.slow

EPOCHS = 4
FIT = [
    *("-m", "lightning_diffusion", "fit", "--config", str(REPO / "configs/moons.yaml"), *SMALL),
    *("--data.init_args.batch_size", "32", "--trainer.max_epochs", str(EPOCHS)),  # 16 steps an epoch per rank
    *("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"),
    *("--trainer.enable_progress_bar", "false"),
]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "PYTHONUNBUFFERED": "1", "LIGHTNING_DIFFUSION_DEBUG": ""}


def start(out, log, *extra):
    with open(log, "w") as stream:
        return subprocess.Popen(
            [sys.executable, *FIT, "--output_dir", str(out), *extra], cwd=REPO, env=ENV, stdout=stream, stderr=stream
        )


def rank_1(process):
    with open(f"/proc/{process.pid}/task/{process.pid}/children") as children:
        pids = [int(pid) for pid in children.read().split()]  # rank 1, started by Lightning's launcher
    assert len(pids) == 1, pids
    return pids[0]


def error_lines(log):
    return [line for line in log.read_text().splitlines() if line.startswith("error:")]


def finish(process, log, timeout):
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"rank 0 still runs {timeout} s later: {log.read_text()[-3000:]}") from None


def test_a_killed_rank_ends_the_other_in_one_line_and_the_run_resumes(tmp_path):
    out, log = tmp_path / "outputs", tmp_path / "log.txt"
    process = start(out, log)
    checkpoints = out / "moons/version_0/checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "last.ckpt").exists():  # both ranks have trained an epoch
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    os.kill(rank_1(process), signal.SIGKILL)  # the OOM killer, as it takes one rank
    killed = time.monotonic()
    assert finish(process, log, timeout=30) == 1
    assert time.monotonic() - killed < 30
    lines = error_lines(log)
    assert len(lines) == 1 and "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert lines[0].startswith("error: rank 1 (ended by SIGKILL) was lost at step "), lines
    assert lines[0].endswith("and rerun the same command with --ckpt_path last."), lines
    newest = lines[0].split("the newest checkpoint is ")[1].split(";")[0]
    assert load(newest)["global_step"] > 0  # rank 0's files are whole

    resumed = subprocess.run(
        [sys.executable, *FIT, "--output_dir", str(out), "--ckpt_path", "last"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load(out / "moons/version_1/checkpoints/last.ckpt")["global_step"] == EPOCHS * 16


def test_a_hung_rank_ends_the_run_at_the_collective_timeout_in_one_line(tmp_path):
    out, log = tmp_path / "outputs", tmp_path / "log.txt"
    hang = ["--trainer.callbacks+=helpers.hang.Hang", "--trainer.callbacks.init_args.step", "20"]
    process = start(out, log, "--collective_timeout", "15", *hang)  # also the time rank 1 has to start
    assert finish(process, log, timeout=120) == 1
    lines = error_lines(log)
    assert len(lines) == 1, log.read_text()[-3000:]
    assert lines[0].startswith(
        "error: a collective operation waited longer than --collective_timeout (15 s) at step"
    ), lines
    assert lines[0].endswith("--ckpt_path last."), lines


def test_ranks_that_do_not_all_join_in_time_end_in_one_line(tmp_path):
    """A rank that starts slower than --collective_timeout (here 0.5 s: importing torch alone takes longer)."""
    out, log = tmp_path / "outputs", tmp_path / "log.txt"
    process = start(out, log, "--collective_timeout", "0.5")
    assert finish(process, log, timeout=120) == 1
    lines = error_lines(log)
    assert lines == [
        "error: the 2 ranks did not all join the process group within --collective_timeout (0.5 s): no checkpoint "
        "was saved yet; check that every rank started (a slow start needs a longer --collective_timeout) and rerun "
        "the same command."
    ], log.read_text()[-3000:]
