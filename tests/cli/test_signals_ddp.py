"""Stop signals under DDP (two CPU ranks, gloo): a SIGTERM on one rank stops both with a checkpoint, and the ranks
agree on a stop at Lightning's own logging steps, which CheckpointOnSignal tells from public trainer attributes."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from helpers import stop_signals
from helpers.checkpoints import load
from helpers.stop_signals import SMALL, as_foreground_job
from lightning.pytorch.callbacks import Callback

import lightning_diffusion.callbacks as callbacks

config = stop_signals.config  # the fixture: configs/moons.yaml


@pytest.mark.slow  # two processes
def test_ddp_sigterm_on_one_rank_stops_both_with_a_checkpoint(tmp_path, config):
    """Two CPU ranks (gloo); the SIGTERM reaches rank 1 only. With Lightning's own handling rank 1 broadcasts from
    inside its signal handler and the job dies of a collective mismatch, without a checkpoint."""
    out = tmp_path / "outputs"
    command = [
        sys.executable,
        "-m",
        "lightning_diffusion",
        "fit",
        "--config",
        config,
        *SMALL,
        "--data.init_args.batch_size",
        "32",
        "--trainer.max_epochs",
        "1000",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--output_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
    ]
    log = tmp_path / "log.txt"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=stream,
            stderr=subprocess.STDOUT,
            preexec_fn=as_foreground_job,
        )
    checkpoints = out / "moons" / "version_0" / "checkpoints"
    ranks = [process.pid]
    try:
        deadline = time.monotonic() + 120
        while not (checkpoints / "last.ckpt").exists():  # both ranks have trained an epoch
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with open(f"/proc/{process.pid}/task/{process.pid}/children") as children:
            ranks += [int(pid) for pid in children.read().split()]  # rank 1, started by Lightning's launcher
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGTERM)
        assert process.wait(timeout=60) == 143, log.read_text()[-3000:]  # 128 + SIGTERM, after the checkpoint
        deadline = time.monotonic() + 30
        while _running(ranks[1]):
            assert time.monotonic() < deadline, "rank 1 outlived rank 0"
            time.sleep(0.1)
    finally:
        for pid in ranks:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
    state = load(checkpoints / "interrupted.ckpt")
    assert state["global_step"] >= load(checkpoints / "last.ckpt")["global_step"] > 0
    assert "SIGTERM: saved" in log.read_text()


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("accumulate", [1, 3])
def test_the_ranks_agree_at_lightnings_own_logging_steps(accumulate):
    """CheckpointOnSignal tells from public trainer attributes where Lightning logs (where the ranks agree on a
    stop inside an epoch): the batches of Lightning's own (private) condition but an epoch's last, with and without
    gradient accumulation."""
    import lightning as L
    from diffusers import DDPMScheduler

    from lightning_diffusion import DiffusionModule
    from lightning_diffusion.data import Toy2DDataModule
    from lightning_diffusion.denoisers import MLPDenoiser

    agreed, logged = [], []

    class Agreements(callbacks.CheckpointOnSignal):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batch = (trainer.current_epoch, batch_idx)
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            self.batch = None

        def _agree(self, trainer):
            if self.batch is not None:  # not the epoch's end
                agreed.append(self.batch)
            return False

    class Logged(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            if trainer._logger_connector.should_update_logs and not last:
                logged.append((trainer.current_epoch, batch_idx))

    model = DiffusionModule(MLPDenoiser(hidden_dim=8, num_blocks=1), DDPMScheduler(), sample_shape=(2,))
    trainer = L.Trainer(
        max_epochs=2,
        log_every_n_steps=3,
        accumulate_grad_batches=accumulate,
        callbacks=[Agreements(), Logged()],
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, Toy2DDataModule(num_samples=640, num_val_samples=64, batch_size=64))
    assert agreed == logged and len(logged) >= 2
