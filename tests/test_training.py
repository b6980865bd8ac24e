"""A short real training through the CLI: the loss falls, checkpoints reload and sample, predict writes files."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO
from lightning_diffusion import DiffusionModule

SHORT = [
    "--config", str(REPO / "configs/moons.yaml"),
    "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "4", "--trainer.log_every_n_steps", "1",
    "--data.init_args.num_samples", "4096", "--data.init_args.num_val_samples", "512",
    "--model.val_num_samples", "256", "--model.num_inference_steps", "100",
    # the eps loss falls far in a few steps; the v loss of 2D data has a high floor (about 0.92), eps about 0.2
    "--model.prediction_type", "epsilon",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lightning_diffusion.cli import main

    out = tmp_path_factory.mktemp("run") / "outputs"
    cli = main(["fit", *SHORT, "--output_dir", str(out), "--trainer.enable_progress_bar", "false"])
    return cli, out / "moons" / "version_0"


def test_run_folder_holds_config_checkpoints_plots_metrics(trained):
    cli, run = trained
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert {p.name for p in (run / "plots").iterdir()} == {"samples_epoch=0003.png", "trajectory_epoch=0003.png"}
    assert "seed_everything: 0" in (run / "config.yaml").read_text()


def test_training_lowers_the_loss(trained):
    _, run = trained
    loss = pd.read_csv(run / "metrics.csv")["train/loss"].dropna().to_numpy()
    assert len(loss) >= 20
    assert loss[-10:].mean() < 0.8 * loss[:10].mean()
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val/swd"].dropna().iloc[-1] < 5 * metrics["val/swd_floor"].dropna().iloc[-1]


def test_checkpoint_reloads_and_samples_in_data_space(trained):
    _, run = trained
    model = DiffusionModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    g = torch.Generator().manual_seed(0)
    x = model.sample(500, sampler="DPMSolverMultistepScheduler", num_inference_steps=20, generator=g)
    assert x.shape == (500, 2) and torch.isfinite(x).all()
    # two moons live in about [-1, 2] x [-0.5, 1] (data space, not standardized)
    assert -0.5 < x[:, 0].mean() < 1.5 and -0.3 < x[:, 1].mean() < 0.7
    again = model.sample(500, sampler="DPMSolverMultistepScheduler", num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_predict_writes_samples_with_the_sampler_of_the_command_line(trained, tmp_path):
    from lightning_diffusion.cli import main

    _, run = trained
    cli = main([
        "predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
        "--model.sampler", "DDIMScheduler", "--model.num_inference_steps", "25",
        "--data.init_args.predict_num_samples", "300", "--output_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ])
    assert cli.model.hparams.sampler == "DDIMScheduler" and cli.model.hparams.num_inference_steps == 25
    files = list(tmp_path.rglob("samples.npz"))
    assert len(files) == 1
    samples = np.load(files[0])["samples"]
    assert samples.shape == (300, 2) and np.isfinite(samples).all()


def test_sampler_benchmark_small_mode(trained, tmp_path, capsys):
    """benchmarks/samplers_2d.py runs on a real checkpoint, so the script cannot rot."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("samplers_2d", REPO / "benchmarks" / "samplers_2d.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, run = trained
    notes = tmp_path / "benchmarks.md"
    report = bench.main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--num_samples", "200",
                         "--samplers", "DDIMScheduler:5", "UniPCMultistepScheduler:5", "--notes", str(notes)])
    assert "| DDIMScheduler | 5 |" in report and "| UniPCMultistepScheduler | 5 |" in report
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")]
    assert "SWD / DDIMScheduler 5's" in rows[0][4] and rows[3][4] == "1.00"  # the first sampler is the yardstick
    assert notes.read_text() == report


def test_validate_on_a_checkpoint_writes_metrics_json(trained, tmp_path):
    import json

    from lightning_diffusion.cli import main

    _, run = trained
    main([
        "validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
        "--model.sampler", "DDPMScheduler", "--model.num_inference_steps", "100",
        "--output_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ])
    (path,) = tmp_path.rglob("metrics_validate.json")
    record = json.loads(path.read_text())
    assert record["sampler"] == "DDPMScheduler" and record["num_inference_steps"] == 100
    assert record["checkpoint"].endswith("last.ckpt")
    metrics = record["metrics"]
    assert {"val/loss", "val/swd", "val/swd_floor", "val/mmd", "val/mmd_floor"} <= set(metrics)
    # the same EMA weights, sampler and noise as the last validation of fit: the same number
    fit_metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val/swd"] == pytest.approx(fit_metrics["val/swd"].dropna().iloc[-1], rel=1e-5)
