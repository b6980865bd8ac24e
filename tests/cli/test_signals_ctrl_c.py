"""Ctrl-C, and a stop during predict: Ctrl-C stops a fit like SIGTERM (exit 130, with interrupted.ckpt) and a second
one aborts it at once, a stop signal ends `predict` with nothing written, a Ctrl-C outside a run is one line, and an
interrupted write of samples leaves no file."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO
from helpers import stop_signals
from helpers.checkpoints import load
from helpers.stop_signals import SMALL, as_foreground_job, error_lines, run_sender, send

import lightning_diffusion.callbacks as callbacks
from lightning_diffusion.errors import one_line_errors

config = stop_signals.config  # the fixture: configs/moons.yaml


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
        "--data.init_args.batch_size",
        "256",
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
