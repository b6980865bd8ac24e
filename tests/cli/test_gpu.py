"""CUDA paths: bf16-mixed and torch.compile on a GPU. Skipped where there is none, never faked."""

import pandas as pd
import pytest
import torch
from conftest import REPO, TRAINED_MOONS, TrainedMoons, cpu_overrides
from helpers.quality import moons_failures, swd_failure

from lightning_diffusion import DiffusionModule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_samples_on_cuda(run_cli, tmp_path, precision):
    """The session's moons recipe (tests/conftest.py) in mixed precision learns the two moons
    (tests/helpers/quality.py)."""
    cli = run_cli(
        "fit",
        *TRAINED_MOONS,
        "--trainer.accelerator",
        "gpu",
        "--trainer.devices",
        "1",
        "--trainer.precision",
        precision,
    )
    run = TrainedMoons(run=tmp_path / "outputs/moons/version_0", half_trained=None)
    metrics = pd.read_csv(run.run / "metrics.csv")
    assert metrics["train/loss"].dropna().notna().all()
    train, val = run.splits()
    assert swd_failure(metrics["val/swd"].dropna().iloc[-1], val[:1000], train) is None
    x = cli.model.cuda().sample(
        2000, sampler="DPMSolverMultistepScheduler", num_inference_steps=20, generator=torch.Generator().manual_seed(0)
    )
    assert x.device.type == "cuda" and moons_failures(x.cpu()) == []


def test_compile_on_cuda_gives_a_plain_checkpoint(run_cli, tmp_path, fake_mnist_root):
    config = REPO / "configs/mnist_cond.yaml"
    overrides = [a for a in cpu_overrides(config, fake_mnist_root)]
    overrides[overrides.index("--trainer.accelerator") + 1] = "gpu"
    overrides[overrides.index("--trainer.precision") + 1] = "bf16-mixed"
    run_cli(
        "fit",
        "--config",
        str(config),
        *overrides,
        "--trainer.max_steps",
        "5",
        "--model.compile",
        "true",
        "--trainer.limit_val_batches",
        "1",
        "--float32_matmul_precision",
        "high",
    )
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    model = DiffusionModule.load_from_checkpoint(ckpt, compile=False).cuda()
    assert torch.isfinite(model.sample(4, class_labels=[0, 1, 2, 3], num_inference_steps=3)).all()


@pytest.mark.parametrize("config", ["moons", "mnist_cond", "celeb_cond"])
def test_cuda_itself_counts_no_host_sync_outside_the_logging_steps(config, tmp_path, fake_mnist_root, fake_celeb_dir):
    """What tests/cli/test_multi_gpu.py shows on CPU by wrapping the calls that sync, as CUDA reports it
    (torch.cuda.set_sync_debug_mode): 30 training steps in the config's precision, logging every 10, and no
    synchronizing CUDA call in any step but the logging ones and an epoch's last."""
    from syncs import count_syncs, device_overrides

    path = REPO / "configs" / f"{config}.yaml"
    python, cuda, epoch = count_syncs(
        path, device_overrides(path, "cuda", fake_mnist_root, fake_celeb_dir), 30, 10, tmp_path / "outputs"
    )
    quiet = [i for i in range(30) if (i + 1) % 10 and (i + 1) % epoch]
    counts = cuda.training_counts(30)
    assert [counts[i] for i in quiet] == [0] * len(quiet), counts
    assert sum(counts) > 0  # the logging steps do read the loss: the count sees syncs
