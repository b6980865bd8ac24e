"""Scale switches on CPU: DDP (2 processes, gloo), bf16-mixed, torch.compile, and the non-finite-loss stop."""

import json
import os
import subprocess
import sys

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, cpu_overrides
from diffusers import DDPMScheduler
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser

SMALL_2D = [
    "--data.init_args.num_samples",
    "2048",
    "--data.init_args.batch_size",
    "256",
    "--data.init_args.num_val_samples",
    "256",
    "--model.val_num_samples",
    "64",
    "--model.num_inference_steps",
    "10",
    "--trainer.check_val_every_n_epoch",
    "1",
    "--trainer.log_every_n_steps",
    "1",
]


def run_subprocess(args, tmp_path, timeout=300):
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_diffusion",
            *args,
            "--output_dir",
            str(tmp_path / "outputs"),
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
ONE_DEVICE = ["--trainer.strategy", "auto", "--trainer.devices", "1"]  # in this process: no process group here
SHORT_FIT = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]


def assert_one_set_of_artifacts(output: str, experiment):
    """A 2-rank fit of 2 epochs left one run folder, its files written once, one reduced val/loss per validation."""
    assert "device cpu x2" in output
    runs = list(experiment.glob("version_*"))
    assert [r.name for r in runs] == ["version_0"]
    run = runs[0]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    pngs = [p.name for p in run.rglob("*.png")]
    assert pngs and not any("-1." in name for name in pngs)  # drawn once, by rank zero
    assert pd.read_csv(run / "metrics.csv")["val/loss"].notna().sum() == 2
    return run


@pytest.mark.slow  # two processes
def test_ddp_fit_predict_and_validate_in_one_launch_match_one_device(tmp_path):
    """One launch of 2 CPU processes (gloo) runs fit, then predict and validate on its checkpoint; the same predict
    and validate on one device, in this process, give the same samples and the same sample metrics."""
    out = tmp_path / "ddp"
    ckpt = out / "moons/version_0/checkpoints/last.ckpt"
    config = out / "moons/version_0/config.yaml"
    quiet = ["--trainer.enable_progress_bar", "false"]
    predict = [
        "predict",
        "--config",
        str(config),
        "--ckpt_path",
        str(ckpt),
        "--model.sampler",
        "DDIMScheduler",
        "--model.num_inference_steps",
        "10",
        "--data.init_args.predict_num_samples",
        "101",
        "--data.init_args.batch_size",
        "16",
        *quiet,
    ]
    # 1024 generated samples against 1024 held-out ones, and the floor's 1024: 2 batches of 256 of each per rank
    validate = [
        "validate",
        "--config",
        str(config),
        "--ckpt_path",
        str(ckpt),
        "--model.sampler",
        "DDIMScheduler",
        "--model.num_inference_steps",
        "10",
        "--model.val_num_samples",
        "1024",
        "--data.init_args.num_val_samples",
        "2048",
        "--trainer.limit_val_batches",
        "1.0",
        *quiet,
    ]
    commands = [
        [
            "fit",
            "--config",
            str(REPO / "configs/moons.yaml"),
            *SMALL_2D,
            *SHORT_FIT,
            *DDP,
            "--output_dir",
            str(out),
            *quiet,
        ],
        [*predict, *DDP, "--output_dir", str(tmp_path / "ddp_predict")],
        [*validate, *DDP, "--output_dir", str(tmp_path / "ddp_validate")],
        # an odd val_num_samples: 511 samples a rank, and the record says 1022, the number used
        [*validate, *DDP, "--model.val_num_samples", "1023", "--output_dir", str(tmp_path / "ddp_validate_odd")],
    ]
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "cli_commands.py"), json.dumps(commands)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_one_set_of_artifacts(result.stderr + result.stdout, out / "moons")

    from lightning_diffusion.cli import main

    main([*predict, *ONE_DEVICE, "--output_dir", str(tmp_path / "one_predict")])
    main([*validate, *ONE_DEVICE, "--output_dir", str(tmp_path / "one_validate")])
    # predict on 2 ranks: one samples.npz, in request order, as on one device
    (ddp,) = (tmp_path / "ddp_predict").rglob("samples*.npz")
    (one,) = (tmp_path / "one_predict").rglob("samples*.npz")
    assert ddp.name == "samples.npz"
    ddp, one = np.load(ddp)["samples"], np.load(one)["samples"]
    assert ddp.shape == one.shape == (101, 2) and np.allclose(ddp, one, atol=1e-4)
    # sample metrics: computed on the samples of both ranks gathered. The ranks take alternate held-out batches,
    # so together their first halves are the first 1024 held-out points and their second halves the next 1024, as
    # on one device: the same floors. The generated samples differ (each rank has its own noise), and so does the
    # validation loss (each rank draws t and eps by its own batch index): they agree within sampling error.
    (ddp,) = (tmp_path / "ddp_validate").rglob("metrics_validate.json")
    (one,) = (tmp_path / "one_validate").rglob("metrics_validate.json")
    ddp, one = json.loads(ddp.read_text()), json.loads(one.read_text())
    assert ddp["num_samples"] == one["num_samples"] == 1024
    (odd,) = (tmp_path / "ddp_validate_odd").rglob("metrics_validate.json")
    assert json.loads(odd.read_text())["num_samples"] == 1022
    ddp, one = ddp["metrics"], one["metrics"]
    assert ddp["val/swd_floor"] == pytest.approx(one["val/swd_floor"], rel=1e-4)
    assert ddp["val/mmd_floor"] == pytest.approx(one["val/mmd_floor"], rel=1e-3, abs=1e-6)
    assert ddp["val/swd"] == pytest.approx(one["val/swd"], rel=0.15), (ddp, one)  # seeds vary it by 3% (sd)
    assert ddp["val/loss"] == pytest.approx(one["val/loss"], rel=0.05)


@pytest.mark.slow
def test_ddp_mnist_two_cpu_processes_one_set_of_artifacts(tmp_path, fake_mnist_root):
    path = REPO / "configs/mnist.yaml"
    args = ["fit", "--config", str(path), *cpu_overrides(path, fake_mnist_root), *SHORT_FIT, *DDP]
    result = run_subprocess(args, tmp_path)
    assert_one_set_of_artifacts(result.stderr + result.stdout, tmp_path / "outputs" / "mnist")


def test_bf16_mixed_on_cpu_trains(run_cli, tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(REPO / "configs/moons.yaml"),
        *SMALL_2D,
        "--trainer.max_epochs",
        "2",
        "--trainer.precision",
        "bf16-mixed",
        "--model.prediction_type",
        "epsilon",
    )
    assert cli.trainer.precision == "bf16-mixed"
    loss = pd.read_csv(next((tmp_path / "outputs").rglob("metrics.csv")))["train/loss"].dropna().to_numpy()
    assert torch.isfinite(torch.tensor(loss)).all() and loss[-5:].mean() < 0.8 * loss[:5].mean()
    assert cli.model.formulation.alphas_cumprod.dtype == torch.float32  # the schedule math stays in float32


@pytest.mark.slow
def test_compiled_training_checkpoint_loads_without_compile(run_cli, tmp_path):
    cli = run_cli(
        "fit",
        "--config",
        str(REPO / "configs/moons.yaml"),
        *SMALL_2D,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--model.compile",
        "true",
    )
    assert cli.model.denoiser._compiled_call_impl is not None  # what nn.Module.compile sets: training was compiled
    assert torch.isfinite(cli.model.sample(16, num_inference_steps=5)).all()  # the compiled denoiser samples
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert {key.split(".")[0] for key in state} == {"denoiser"} and not any("_orig_mod" in key for key in state)
    model = DiffusionModule.load_from_checkpoint(ckpt, compile=False)
    assert model.sample(16, num_inference_steps=5).shape == (16, 2)
    compiled = DiffusionModule.load_from_checkpoint(ckpt)
    compiled.denoiser.compile()
    compiled.load_state_dict(state)  # a compiled module has the plain names too
    same = {"num_inference_steps": 5, "generator": torch.Generator().manual_seed(0)}
    plain_samples = model.sample(16, **same)
    same["generator"].manual_seed(0)
    assert torch.allclose(compiled.sample(16, **same), plain_samples, atol=1e-4)


class _NaNAfter(torch.nn.Module):
    """An MLP that starts returning NaN at its `steps`-th training call."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.net, self.steps, self.calls = MLPDenoiser(hidden_dim=16, num_blocks=1), steps, 0
        self.num_classes = None

    def forward(self, x, t, labels=None):
        self.calls += self.training
        out = self.net(x, t, labels)
        return out * float("nan") if self.calls > self.steps else out


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model = DiffusionModule(denoiser=_NaNAfter(steps=5), scheduler=DDPMScheduler(), data_mean=[0, 0], data_std=[1, 1])
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    with pytest.raises(FloatingPointError, match=r"Non-finite loss at step 5 \(epoch 0\).*last\.ckpt"):
        trainer.fit(model, Toy2DDataModule(num_samples=2048, batch_size=64))
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and all(torch.isfinite(v).all() for v in state["state_dict"].values())
