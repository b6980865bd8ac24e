"""Resume: 2 + 2 epochs equal 4 straight epochs; SIGTERM leaves a checkpoint that resumes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO

SMALL = [
    "--config", str(REPO / "configs/moons.yaml"), "--data.init_args.num_samples", "2048",
    "--data.init_args.num_val_samples", "256", "--model.val_num_samples", "64", "--model.num_inference_steps", "10",
    "--trainer.check_val_every_n_epoch", "1",
]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_two_plus_two_epochs_equal_four(run_cli, tmp_path):
    run_cli("fit", *SMALL, "--trainer.max_epochs", "4", "--experiment", "straight")
    run_cli("fit", *SMALL, "--trainer.max_epochs", "2", "--experiment", "resumed")
    run_cli("fit", *SMALL, "--trainer.max_epochs", "4", "--experiment", "resumed", "--ckpt_path", "last")
    outputs = tmp_path / "outputs"
    straight = load(outputs / "straight/version_0/checkpoints/last.ckpt")
    resumed = load(outputs / "resumed/version_1/checkpoints/last.ckpt")  # the continuation is a new run folder
    assert straight["global_step"] == resumed["global_step"] == 32
    for key in ("state_dict", "current_model_state"):  # EMA weights and training weights
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)  # exactly, on the same machine
    assert straight["lr_schedulers"] == resumed["lr_schedulers"]
    assert torch.equal(straight["optimizer_states"][0]["state"][0]["exp_avg"], resumed["optimizer_states"][0]["state"][0]["exp_avg"])


def test_ckpt_path_last_without_a_checkpoint_is_one_sentence(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", *SMALL, "--experiment", "nothing_yet", "--ckpt_path", "last")
    assert "--ckpt_path last found no last.ckpt or interrupted.ckpt" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    out = tmp_path / "outputs"
    command = [sys.executable, "-m", "lightning_diffusion", "fit", *SMALL, "--trainer.max_epochs", "1000",
               "--output_dir", str(out), "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = out / "moons" / "version_0" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "last.ckpt").exists():  # trained at least one epoch
        assert process.poll() is None and time.monotonic() < deadline, "the run ended or stalled before training"
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    interrupted = checkpoints / "interrupted.ckpt"
    assert interrupted.is_file(), output[-3000:]
    state = load(interrupted)
    assert state["global_step"] > 0 and state["global_step"] >= load(checkpoints / "last.ckpt")["global_step"]
    assert "SIGTERM: saved" in output
    # resume from it: `last` picks the newest checkpoint, here interrupted.ckpt
    resumed = subprocess.run(
        [*command[:-6], "--trainer.max_epochs", str(state["epoch"] + 2), "--ckpt_path", "last",
         "--output_dir", str(out), "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {interrupted}" in resumed.stderr + resumed.stdout
