"""Stop signals and resume: a SIGTERM during validation stops at the epoch's end and 2 + 2 epochs resume to exactly
4 straight ones, nothing is saved outside fit, under DDP a signal on one rank stops both ranks with a checkpoint,
`--ckpt_path last` finds the newest checkpoint, and last.ckpt follows every epoch. Ctrl-C stops a fit like SIGTERM
(exit 130) and a second one aborts it; a stop signal ends `predict` with nothing written."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO
from lightning.pytorch.callbacks import Callback

import lightning_diffusion.callbacks as callbacks
from lightning_diffusion.errors import one_line_errors

STEPS_PER_EPOCH = 4  # 1024 samples in batches of 256
SMALL = [
    "--data.init_args.num_samples",
    "1024",
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


def sigterm_at_validation(epoch=None):
    """A callback class that sends this process a SIGTERM at the first validation batch (of `epoch`, if given)."""

    class SigtermAtValidation(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0 and not trainer.sanity_checking and epoch in (None, trainer.current_epoch):
                os.kill(os.getpid(), signal.SIGTERM)

    return SigtermAtValidation


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


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


# ------------------------------------------------------------------------------- Ctrl-C, and a stop during predict

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A moons model trained 2 steps, to predict with."""
    from lightning_diffusion.cli import main

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lightning_diffusion"])
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/moons.yaml"),
                *SMALL,
                "--trainer.max_steps",
                "2",
                "--output_dir",
                str(root),
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
    return root / "moons/version_0/checkpoints/last.ckpt"


def test_ctrl_c_during_fit_stops_like_sigterm(tmp_path, config):
    """Ctrl-C (SIGINT, here from another process, as a terminal sends it) stops the fit after the same batch on
    every rank with interrupted.ckpt and exits 130 (128 + SIGINT). Lightning alone stops at once, without a
    checkpoint, and exits 1."""
    out, err = tmp_path / "outputs", tmp_path / "stderr.txt"
    command = [
        sys.executable,
        "-m",
        "lightning_diffusion",
        "fit",
        "--config",
        config,
        *SMALL,
        "--trainer.max_epochs",
        "1000",
        "--output_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
    ]
    with open(err, "w") as stream:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "LIGHTNING_DIFFUSION_DEBUG": ""},
            stdout=subprocess.DEVNULL,
            stderr=stream,
            preexec_fn=as_foreground_job,
        )
    checkpoints = out / "moons" / "version_0" / "checkpoints"
    try:
        deadline = time.monotonic() + 120
        while not (checkpoints / "last.ckpt").exists():  # an epoch is done: the training runs
            assert process.poll() is None and time.monotonic() < deadline, err.read_text()[-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, err.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = err.read_text()
    assert "Traceback" not in stderr and error_lines(stderr) == [], stderr[-3000:]
    assert f"SIGINT: saved {checkpoints / 'interrupted.ckpt'}" in stderr
    assert load(checkpoints / "interrupted.ckpt")["global_step"] >= load(checkpoints / "last.ckpt")["global_step"] > 0


def test_a_second_ctrl_c_aborts_at_once(tmp_path, config):
    """The first Ctrl-C waits for the next point where the ranks agree (here after a batch that would last a
    minute); a second one while it waits aborts at once: exit 130, one line, no traceback, no checkpoint."""
    started = time.monotonic()
    code, stderr = run_sender(
        tmp_path,
        "fit",
        "--config",
        config,
        *SMALL,
        "--trainer.max_epochs",
        "1000",
        *send("SIGINT", "train", 2, again=0.2),
        timeout=55,
    )
    assert code == 130, stderr[-3000:]
    assert time.monotonic() - started < 50  # the batch's minute did not run out
    lines = error_lines(stderr)
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    assert "second Ctrl-C" in lines[0]
    assert not list((tmp_path / "outputs").rglob("interrupted.ckpt"))


@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_signal_ends_predict_with_nothing_written(tmp_path, config, trained, signal_name, code):
    """A stop signal during predict ends it after that batch with 128 + the signal: no samples.npz, no grid, no
    partial file (the run folder, which held only its config, is removed). Lightning alone ignores SIGTERM during
    predict and writes its samples; Ctrl-C exits 1."""
    exit_code, stderr = run_sender(
        tmp_path,
        "predict",
        "--config",
        config,
        "--ckpt_path",
        str(trained),
        "--data.init_args.predict_num_samples",
        "1024",
        "--model.num_inference_steps",
        "10",
        *send(signal_name, "predict", 1),
    )  # the second of 4 batches
    assert exit_code == code, stderr[-3000:]
    assert "Traceback" not in stderr and error_lines(stderr) == [], stderr[-3000:]
    assert f"{signal_name}: predict stopped after batch 2 of 4" in stderr
    assert [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()] == []


def test_ctrl_c_outside_a_run_is_one_line(capsys):
    """A Ctrl-C before the run (parsing, building the model) or that Lightning caught inside it (it exits 1)."""
    # (a KeyboardInterrupt that got through would end the whole pytest session: it is caught here)
    with pytest.raises((SystemExit, KeyboardInterrupt)) as exit_info, one_line_errors([]):
        raise KeyboardInterrupt
    assert exit_info.type is SystemExit and exit_info.value.code == 130
    with pytest.raises((SystemExit, KeyboardInterrupt)) as exit_info, one_line_errors([]):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning's trainer does after its clean-up
    assert exit_info.type is SystemExit and exit_info.value.code == 130
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 2 and all("interrupted by Ctrl-C" in line for line in lines)


def test_an_interrupted_write_of_samples_leaves_no_file(tmp_path, monkeypatch):
    """samples.npz (and each grid) is written under a temporary name and moved into place once complete."""
    from types import SimpleNamespace

    def interrupted(file, **arrays):
        (open(file, "wb") if isinstance(file, (str, os.PathLike)) else file).write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    trainer = SimpleNamespace(world_size=1, loggers=[], default_root_dir=str(tmp_path))
    module = SimpleNamespace(sampler_name="ddpm", num_inference_steps=2, hparams=SimpleNamespace(guidance_scale=1.0))
    predictions = [{"samples": torch.randn(4, 2), "class_labels": None, "indices": torch.arange(4)}]
    with pytest.raises(KeyboardInterrupt):
        callbacks.SampleWriter().write_on_epoch_end(trainer, module, predictions, [])
    assert list(tmp_path.iterdir()) == []
