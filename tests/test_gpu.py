"""CUDA paths: bf16-mixed and torch.compile on a GPU. Skipped where there is none, never faked."""

import pandas as pd
import pytest
import torch

from conftest import REPO, cpu_overrides
from lightning_diffusion import DiffusionModule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL_2D = [
    "--data.init_args.num_samples", "4096", "--data.init_args.num_val_samples", "512",
    "--model.val_num_samples", "256", "--model.num_inference_steps", "50", "--trainer.accelerator", "gpu",
    "--trainer.devices", "1", "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "3",
]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_samples_on_cuda(run_cli, tmp_path, precision):
    cli = run_cli("fit", "--config", str(REPO / "configs/moons.yaml"), *SMALL_2D, "--trainer.precision", precision)
    metrics = pd.read_csv(next((tmp_path / "outputs").rglob("metrics.csv")))
    assert metrics["train/loss"].dropna().notna().all() and metrics["val/swd"].dropna().iloc[-1] < 1.0
    x = cli.model.sample(256, sampler="DPMSolverMultistepScheduler", num_inference_steps=20)
    assert x.device.type == "cuda" and torch.isfinite(x).all()


def test_compile_on_cuda_gives_a_plain_checkpoint(run_cli, tmp_path, fake_mnist_root):
    config = REPO / "configs/mnist_cond.yaml"
    overrides = [a for a in cpu_overrides(config, fake_mnist_root)]
    overrides[overrides.index("--trainer.accelerator") + 1] = "gpu"
    overrides[overrides.index("--trainer.precision") + 1] = "bf16-mixed"
    run_cli("fit", "--config", str(config), *overrides, "--trainer.max_steps", "5", "--model.compile", "true",
            "--trainer.limit_val_batches", "1", "--float32_matmul_precision", "high")
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    model = DiffusionModule.load_from_checkpoint(ckpt, compile=False).cuda()
    assert torch.isfinite(model.sample(4, class_labels=[0, 1, 2, 3], num_inference_steps=3)).all()
