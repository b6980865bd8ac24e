"""The session's moons training through the CLI (tests/conftest.py: trained_moons): the run folder, the loss falls,
the logged SWD and the reloaded checkpoint's samples are two moons, predict and validate use the command line's
sampler."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from helpers.quality import moons_failures, swd_failure

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.metrics.distances import sliced_wasserstein


def test_run_folder_holds_config_checkpoints_plots_metrics(trained_moons):
    run = trained_moons.run
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert {p.name for p in (run / "plots").iterdir()} == {"samples_epoch=0023.png", "trajectory_epoch=0023.png"}
    assert "seed_everything: 0" in (run / "config.yaml").read_text()


def test_training_lowers_the_loss_and_beats_a_fitted_gaussian(trained_moons):
    metrics = pd.read_csv(trained_moons.run / "metrics.csv")
    loss = metrics["train/loss"].dropna().to_numpy()
    assert len(loss) >= 20
    # v-prediction of 2D data falls from about 1.07 to a floor near 0.92 (eps-prediction falls further: test_scale's
    # bf16 test checks that it loses 20%); predicting v = 0 on standardized data scores E[v^2] = 1
    assert loss[-10:].mean() < 0.9 * loss[:10].mean() and loss[-10:].mean() < 0.95
    # the logged val/swd against the held-out points it was measured on (the first 1000; the floor is their mean
    # distance to 8 independent draws of the data distribution), beside what a Gaussian fitted to the training
    # data scores there
    train, val = trained_moons.splits()
    held_out = val[:1000]
    data = Toy2DDataModule(**yaml.safe_load((trained_moons.run / "config.yaml").read_text())["data"]["init_args"])
    draws = data.independent_draws(1000, 8)
    floor = torch.stack([sliced_wasserstein(draw, held_out) for draw in draws]).mean().item()
    assert metrics["val/swd_floor"].dropna().iloc[-1] == pytest.approx(floor)
    assert swd_failure(metrics["val/swd"].dropna().iloc[-1], held_out, train) is None


def test_checkpoint_reloads_and_samples_two_moons_in_data_space(trained_moons):
    model = DiffusionModule.load_from_checkpoint(trained_moons.last)
    sampler = dict(sampler="DPMSolverMultistepScheduler", num_inference_steps=20)
    x = model.sample(2000, generator=torch.Generator().manual_seed(0), **sampler)
    assert x.shape == (2000, 2) and moons_failures(x) == []  # in data space: the moons of sklearn's make_moons
    assert torch.equal(x, model.sample(2000, generator=torch.Generator().manual_seed(0), **sampler))


def test_predict_writes_samples_with_the_sampler_of_the_command_line(trained_moons, tmp_path):
    from lightning_diffusion.cli import main

    run = trained_moons.run
    cli = main(
        [
            "predict",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(trained_moons.last),
            "--model.sampler",
            "DDIMScheduler",
            "--model.num_inference_steps",
            "25",
            "--data.init_args.predict_num_samples",
            "1000",
            "--output_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert cli.model.hparams.sampler == "DDIMScheduler" and cli.model.hparams.num_inference_steps == 25
    files = list(tmp_path.rglob("samples.npz"))
    assert len(files) == 1
    samples = np.load(files[0])["samples"]
    assert samples.shape == (1000, 2) and np.isfinite(samples).all()
    assert moons_failures(torch.from_numpy(samples)) == []  # the model's samples, in data space


def test_sampler_benchmark_small_mode(trained_moons, tmp_path, capsys):
    """benchmarks/samplers_2d.py runs on a real checkpoint, so the script cannot rot."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("samplers_2d", REPO / "benchmarks" / "samplers_2d.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    notes = tmp_path / "benchmarks.md"
    report = bench.main(
        [
            "--ckpt",
            str(trained_moons.last),
            "--num_samples",
            "200",
            "--samplers",
            "DDIMScheduler:5",
            "UniPCMultistepScheduler:5",
            "--notes",
            str(notes),
        ]
    )
    assert "| DDIMScheduler | 5 |" in report and "| UniPCMultistepScheduler | 5 |" in report
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| ")]
    assert "SWD / DDIMScheduler 5's" in rows[0][4] and rows[3][4] == "1.00"  # the first sampler is the yardstick
    assert notes.read_text() == report


def test_validate_on_a_checkpoint_writes_metrics_json(trained_moons, tmp_path):
    import json

    from lightning_diffusion.cli import main

    run = trained_moons.run
    main(
        [
            "validate",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(trained_moons.last),
            "--model.sampler",
            "DDPMScheduler",
            "--model.num_inference_steps",
            "100",
            "--output_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    (path,) = tmp_path.rglob("metrics_validate.json")
    record = json.loads(path.read_text())
    assert record["sampler"] == "DDPMScheduler" and record["num_inference_steps"] == 100
    assert record["checkpoint"].endswith("last.ckpt")
    metrics = record["metrics"]
    assert {"val/loss", "val/swd", "val/swd_floor", "val/mmd", "val/mmd_floor"} <= set(metrics)
    # the same EMA weights, sampler and noise as the last validation of fit: the same number
    fit_metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val/swd"] == pytest.approx(fit_metrics["val/swd"].dropna().iloc[-1], rel=1e-5)


def test_the_module_not_the_checkpoint_decides_the_optimizer_implementation(tmp_path):
    """A checkpoint's param groups carry fused/foreach: a run saved unfused and resumed by a module whose optimizer
    is fused went on unfused with an optimizer built fused (under 16-mixed it failed at its first step, the
    GradScaler expecting a fused step). The CLI resumes with the checkpoint's own hyperparameters; the Python API
    can change them."""
    import lightning as L
    from diffusers import DDPMScheduler

    from lightning_diffusion.denoisers import MLPDenoiser

    def fit(fused, max_epochs, ckpt_path=None):
        L.seed_everything(0)
        model = DiffusionModule(
            MLPDenoiser(hidden_dim=16, num_blocks=1),
            DDPMScheduler(),
            sample_shape=(2,),
            optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, fused=fused),
            num_inference_steps=2,
            val_num_samples=16,
        )
        trainer = L.Trainer(
            max_epochs=max_epochs,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, Toy2DDataModule(num_samples=256, num_val_samples=64, batch_size=64), ckpt_path=ckpt_path)
        return trainer

    fit(False, 1)
    (ckpt,) = tmp_path.rglob("*.ckpt")
    (optimizer,) = fit(True, 2, ckpt_path=ckpt).optimizers
    assert optimizer.param_groups[0]["fused"] is True and optimizer._step_supports_amp_scaling


@pytest.mark.parametrize(
    "precision, clip, fused, refused",
    [
        ("bf16-mixed", 1.0, True, True),
        ("bf16-mixed", 1.0, False, False),
        ("bf16-mixed", None, True, False),
        ("32-true", 1.0, True, False),
        ("bf16-true", 1.0, True, False),
        ("bf16-mixed", -1.0, True, False),
    ],
)
def test_clipping_a_fused_optimizer_is_refused_exactly_where_lightning_would_fail(precision, clip, fused, refused):
    """Lightning refuses at the first step where it clips (gradient_clip_val > 0) in mixed precision an optimizer
    that unscales its gradients itself; we say so before training, there and nowhere else."""
    import lightning as L

    from lightning_diffusion.optim import refuses_clipping

    trainer = L.Trainer(precision=precision, gradient_clip_val=clip, logger=False, enable_progress_bar=False)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], fused=fused)
    assert refuses_clipping(trainer, optimizer) is refused
