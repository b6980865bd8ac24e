"""What the tests of stop signals share (tests/cli/test_signals*.py, and the signal rows of tests/cli/test_errors.py):
a shortened moons run (SMALL, 4 steps an epoch, the `config` fixture), the real CLI that sends itself a signal at one
of its batches (SENDER, send, run_sender), and a child process that gets SIGINT as a terminal's foreground job."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO

STEPS_PER_EPOCH = 4  # 1024 samples in batches of 256
SMALL = [
    "--data.init_args.num_samples",
    "1024",
    "--data.init_args.batch_size",
    "256",
    "--data.init_args.num_val_samples",
    "512",  # 2 validation batches
    "--model.val_num_samples",
    "64",
    "--model.num_inference_steps",
    "10",
    "--trainer.check_val_every_n_epoch",
    "1",
    "--trainer.log_every_n_steps",
    "1",  # the ranks agree on a stop at logging steps: here after every batch
]


@pytest.fixture
def config():
    return str(REPO / "configs/moons.yaml")


# The real CLI, run as `python -c SENDER <args>`; with the arguments of `send(...)` the run sends itself a signal at
# one of its batches (the process gets it as it would from a shell or a terminal, at an exact point of the run).
SENDER = """
import os, signal, time
from typing import Optional

import lightning as L

from lightning_diffusion.cli import main


class SendSignal(L.Callback):
    def __init__(self, signal_name: str, stage: str, batch: int, again: Optional[float] = None) -> None:
        self.signum, self.stage, self.batch, self.again = getattr(signal, signal_name), stage, batch, again

    def _at(self, stage, batch_idx):
        if (stage, batch_idx) == (self.stage, self.batch):
            os.kill(os.getpid(), self.signum)
            if self.again is not None:  # a batch that would last a minute, and the signal again while it runs
                time.sleep(self.again)
                os.kill(os.getpid(), self.signum)
                time.sleep(60)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._at("train", batch_idx)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._at("predict", batch_idx)


main()
"""


def as_foreground_job() -> None:
    """In the child before exec: SIGINT at its default, as a terminal's foreground job has it. A script that starts
    pytest in the background (`cmd &`) hands every child an ignored SIGINT, which the CLI rightly leaves ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def send(signal_name, stage, batch, again=None):
    """The arguments that make a SENDER run send itself `signal_name` at batch `batch` of `stage` (train or predict),
    and, with `again`, once more `again` seconds later."""
    args = [
        "--trainer.callbacks+=__main__.SendSignal",
        "--trainer.callbacks.signal_name",
        signal_name,
        "--trainer.callbacks.stage",
        stage,
        "--trainer.callbacks.batch",
        str(batch),
    ]
    return args + (["--trainer.callbacks.again", str(again)] if again is not None else [])


def run_sender(tmp_path, *args, timeout=120):
    """The CLI in a subprocess (SENDER), outputs under tmp_path/outputs; returns its exit code and stderr."""
    command = [
        sys.executable,
        "-c",
        SENDER,
        *args,
        "--output_dir",
        str(tmp_path / "outputs"),
        "--trainer.enable_progress_bar",
        "false",
    ]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "LIGHTNING_DIFFUSION_DEBUG": ""},
        preexec_fn=as_foreground_job,
    )
    return result.returncode, result.stderr


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]
