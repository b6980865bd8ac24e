"""Scale switches on CPU: DDP (2 processes, gloo), bf16-mixed, torch.compile, and the non-finite-loss stop."""

import os
import subprocess
import sys

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDPMScheduler
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import REPO, cpu_overrides
from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser

SMALL_2D = [
    "--data.init_args.num_samples", "2048", "--data.init_args.num_val_samples", "256",
    "--model.val_num_samples", "64", "--model.num_inference_steps", "10",
    "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
]


def run_subprocess(args, tmp_path, timeout=300):
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_diffusion", *args, "--output_dir", str(tmp_path / "outputs"),
         "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("config", ["moons", "mnist"])
def test_ddp_two_cpu_processes_one_set_of_artifacts(tmp_path, config, fake_mnist_root):
    path = REPO / "configs" / f"{config}.yaml"
    extra = SMALL_2D if config == "moons" else cpu_overrides(path, fake_mnist_root)
    result = run_subprocess(
        ["fit", "--config", str(path), *extra, "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
         "--trainer.limit_val_batches", "2", "--trainer.strategy", "ddp", "--trainer.devices", "2",
         "--trainer.accelerator", "cpu"],
        tmp_path,
    )
    assert "device cpu x2" in result.stderr + result.stdout
    runs = list((tmp_path / "outputs" / config).glob("version_*"))
    assert [r.name for r in runs] == ["version_0"]
    run = runs[0]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    pngs = [p.name for p in run.rglob("*.png")]
    assert pngs and not any("-1." in name for name in pngs)  # drawn once, by rank zero
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val/loss"].notna().sum() == 2  # one reduced value per validation
    if config == "moons":  # predict on 2 ranks: one samples.npz, in request order, as on one device
        predict = ["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints/last.ckpt"),
                   "--model.sampler", "DDIMScheduler", "--model.num_inference_steps", "10",
                   "--data.init_args.predict_num_samples", "101", "--data.init_args.batch_size", "16"]
        run_subprocess([*predict, "--trainer.strategy", "ddp", "--trainer.devices", "2"], tmp_path / "ddp_predict")
        run_subprocess([*predict, "--trainer.devices", "1"], tmp_path / "one_predict")
        (ddp,) = (tmp_path / "ddp_predict").rglob("samples*.npz")
        (one,) = (tmp_path / "one_predict").rglob("samples*.npz")
        assert ddp.name == "samples.npz"
        ddp, one = np.load(ddp)["samples"], np.load(one)["samples"]
        assert ddp.shape == one.shape == (101, 2) and np.allclose(ddp, one, atol=1e-4)


def test_bf16_mixed_on_cpu_trains(run_cli, tmp_path):
    cli = run_cli("fit", "--config", str(REPO / "configs/moons.yaml"), *SMALL_2D, "--trainer.max_epochs", "2",
                  "--trainer.precision", "bf16-mixed", "--model.prediction_type", "epsilon")
    assert cli.trainer.precision == "bf16-mixed"
    loss = pd.read_csv(next((tmp_path / "outputs").rglob("metrics.csv")))["train/loss"].dropna().to_numpy()
    assert torch.isfinite(torch.tensor(loss)).all() and loss[-5:].mean() < 0.8 * loss[:5].mean()
    assert cli.model.alphas_cumprod.dtype == torch.float32  # the schedule math stays in float32


def test_compiled_training_checkpoint_loads_without_compile(run_cli, tmp_path):
    cli = run_cli("fit", "--config", str(REPO / "configs/moons.yaml"), *SMALL_2D, "--trainer.max_epochs", "1",
                  "--trainer.limit_train_batches", "3", "--model.compile", "true")
    assert cli.model._train_denoiser is not cli.model.denoiser  # training went through torch.compile
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert {key.split(".")[0] for key in state} == {"denoiser"} and not any("_orig_mod" in key for key in state)
    model = DiffusionModule.load_from_checkpoint(ckpt, compile=False)
    assert model.sample(16, num_inference_steps=5).shape == (16, 2)


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
    trainer = L.Trainer(max_epochs=1, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
                        limit_val_batches=0, accelerator="cpu")
    with pytest.raises(FloatingPointError, match=r"Non-finite loss at step 5 \(epoch 0\).*last\.ckpt"):
        trainer.fit(model, Toy2DDataModule(num_samples=2048, batch_size=64))
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 4 and all(torch.isfinite(v).all() for v in state["state_dict"].values())
