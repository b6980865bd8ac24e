"""Stop signals and resume, in-process: a SIGTERM during validation stops at the epoch's end, `--ckpt_path last` finds
the newest checkpoint and 2 + 2 epochs resume to exactly 4 straight ones (also with the stop inside a mid-epoch
validation), nothing is saved outside fit, SIGUSR1 outside SLURM stops like SIGTERM, and last.ckpt follows every
epoch. Under DDP: test_signals_ddp.py; Ctrl-C and a stop during predict: test_signals_ctrl_c.py."""

import os
import signal

import pytest
import torch
from helpers import stop_signals
from helpers.checkpoints import load
from helpers.stop_signals import SMALL, STEPS_PER_EPOCH
from lightning.pytorch.callbacks import Callback

import lightning_diffusion.callbacks as callbacks

config = stop_signals.config  # the fixture: configs/moons.yaml


def sigterm_at_validation(epoch=None):
    """A callback class that sends this process a SIGTERM at the first validation batch (of `epoch`, if given)."""

    class SigtermAtValidation(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0 and not trainer.sanity_checking and epoch in (None, trainer.current_epoch):
                os.kill(os.getpid(), signal.SIGTERM)

    return SigtermAtValidation


def assert_same_training_state(a, b):
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for key in ("state_dict", "current_model_state"):  # EMA weights, training weights
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)  # exactly, on one machine
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for sa, sb in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=False
    ):
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_two_epochs_stopped_by_sigterm_plus_two_equal_four_straight(run_cli, tmp_path, config, monkeypatch, caplog):
    """Resume is exact: a run whose SIGTERM comes during the second epoch's validation stops at that epoch's end with
    interrupted.ckpt; `--ckpt_path last` finds it and 2 more epochs give the weights, EMA, optimizer and LR-scheduler
    state of 4 straight epochs, bit for bit on one machine."""
    monkeypatch.setattr(callbacks, "SigtermAtValidation", sigterm_at_validation(epoch=1), raising=False)
    run_cli("fit", "--config", config, *SMALL, "--trainer.max_epochs", "4", "--experiment", "straight")
    with pytest.raises(SystemExit, match="143"):  # 128 + SIGTERM, after the checkpoint
        run_cli(
            "fit",
            "--config",
            config,
            *SMALL,
            "--trainer.max_epochs",
            "4",
            "--experiment",
            "resumed",
            "--trainer.callbacks+=lightning_diffusion.callbacks.SigtermAtValidation",
        )
    checkpoints = tmp_path / "outputs/resumed/version_0/checkpoints"
    interrupted = load(checkpoints / "interrupted.ckpt")
    assert interrupted["global_step"] == 2 * STEPS_PER_EPOCH  # the validation ran to its end, then the run stopped
    assert interrupted["global_step"] >= load(checkpoints / "last.ckpt")["global_step"]
    assert "SIGTERM: saved" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Lightning put back the handler of before the run
    run_cli(
        "fit", "--config", config, *SMALL, "--trainer.max_epochs", "4", "--experiment", "resumed", "--ckpt_path", "last"
    )  # finds interrupted.ckpt
    assert f"Restoring states from the checkpoint path at {checkpoints / 'interrupted.ckpt'}" in caplog.text
    straight = load(tmp_path / "outputs/straight/version_0/checkpoints/last.ckpt")
    resumed = load(tmp_path / "outputs/resumed/version_1/checkpoints/last.ckpt")  # the continuation is a new run folder
    assert straight["global_step"] == 4 * STEPS_PER_EPOCH
    assert_same_training_state(straight, resumed)


def test_stop_inside_validation_keeps_training_and_ema_weights_in_place(run_cli, tmp_path, config, monkeypatch):
    """With validation in the middle of an epoch, a stop agreed just before it comes inside it, while the EMA weights
    are swapped into the module: the checkpoint must still hold the training weights as training weights."""

    class SigtermBeforeStep6(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(callbacks, "SigtermBeforeStep6", SigtermBeforeStep6, raising=False)
    mid_epoch = [*SMALL, "--trainer.val_check_interval", "0.5"]  # validation after batches 2 and 4 of each epoch
    run_cli("fit", "--config", config, *mid_epoch, "--trainer.max_steps", "6", "--experiment", "reference")
    with pytest.raises(SystemExit, match="143"):  # 128 + SIGTERM, after the checkpoint
        run_cli(
            "fit",
            "--config",
            config,
            *mid_epoch,
            "--trainer.max_epochs",
            "3",
            "--experiment",
            "stopped",
            "--trainer.callbacks+=lightning_diffusion.callbacks.SigtermBeforeStep6",
        )
    reference = load(tmp_path / "outputs/reference/version_0/checkpoints/last.ckpt")
    stopped = load(tmp_path / "outputs/stopped/version_0/checkpoints/interrupted.ckpt")
    assert reference["global_step"] == stopped["global_step"] == 6
    assert stopped["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["current"]["completed"] == 1  # inside
    for key in ("state_dict", "current_model_state"):  # EMA weights, training weights
        for name, value in reference[key].items():
            assert torch.equal(value, stopped[key][name]), (key, name)


def test_sigterm_outside_fit_saves_nothing(run_cli, tmp_path, config, monkeypatch):
    """A checkpoint of `validate` has no optimizer or EMA state and step 0: `--ckpt_path last` must never find one."""
    run_cli("fit", "--config", config, *SMALL, "--trainer.max_steps", "1", "--experiment", "trained")
    trained = sorted((tmp_path / "outputs").rglob("*.ckpt"))
    monkeypatch.setattr(callbacks, "SigtermAtValidation", sigterm_at_validation(), raising=False)
    with pytest.raises(SystemExit, match="143"):  # 128 + SIGTERM, after the checkpoint
        run_cli(
            "validate",
            "--config",
            config,
            *SMALL,
            "--ckpt_path",
            str(trained[0]),
            "--trainer.callbacks+=lightning_diffusion.callbacks.SigtermAtValidation",
        )
    assert sorted((tmp_path / "outputs").rglob("*.ckpt")) == trained


def test_sigusr1_outside_slurm_stops_with_a_checkpoint(run_cli, tmp_path, config, monkeypatch, caplog):
    """SIGUSR1 (SLURM's --signal) would kill a run outside Lightning's SLURM environment: it stops like SIGTERM."""

    class Sigusr1AtStep2(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(callbacks, "Sigusr1AtStep2", Sigusr1AtStep2, raising=False)
    with pytest.raises(SystemExit, match="143"):  # 128 + SIGTERM, after the checkpoint
        run_cli(
            "fit",
            "--config",
            config,
            *SMALL,
            "--trainer.max_epochs",
            "3",
            "--trainer.callbacks+=lightning_diffusion.callbacks.Sigusr1AtStep2",
        )
    assert load(tmp_path / "outputs/moons/version_0/checkpoints/interrupted.ckpt")["global_step"] == 3
    assert "SIGUSR1: saved" in caplog.text
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


def test_last_ckpt_follows_every_epoch_when_validation_is_rarer(run_cli, tmp_path, config):
    """moons.yaml validates every 20 epochs; a ModelCheckpoint without save_on_train_epoch_end then saves only after
    validation, so last.ckpt (what a resume after a crash starts from) would be up to 19 epochs old."""
    run_cli("fit", "--config", config, *SMALL, "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "2")
    assert load(tmp_path / "outputs/moons/version_0/checkpoints/last.ckpt")["global_step"] == 3 * STEPS_PER_EPOCH
