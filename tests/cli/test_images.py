"""Images through the real CLI on generated MNIST files: training, grids, predict, export, size mismatches."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cpu_overrides
from helpers.image_runs import MNIST, MNIST_COND, fit
from PIL import Image

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import UNetDenoiser


@pytest.fixture(scope="module")
def trained_cond(tmp_path_factory, fake_mnist_root):
    out = tmp_path_factory.mktemp("cond")
    fit(
        MNIST_COND,
        out,
        fake_mnist_root,
        "--trainer.max_epochs",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--data.init_args.batch_size",
        "16",
        "--model.optimizer.init_args.lr",
        "0.002",
    )
    return out / "mnist_cond" / "version_0"


def test_short_training_lowers_the_loss(trained_cond):
    loss = pd.read_csv(trained_cond / "metrics.csv")["train/loss"].dropna().to_numpy()
    assert len(loss) >= 40  # 3 epochs of (300 - 16) // 16 steps
    assert loss[-10:].mean() < 0.6 * loss[:5].mean()


def test_grid_has_one_row_per_class(trained_cond):
    grids = sorted((trained_cond / "samples").glob("grid_epoch=*.png"))
    assert [g.name for g in grids] == ["grid_epoch=0001.png", "grid_epoch=0002.png"]  # every 2 epochs + the last
    width, height = Image.open(grids[-1]).size
    # make_grid: 2-pixel padding around 32x32 images; 10 classes x 8 samples per row
    assert (height, width) == (10 * 34 + 2, 8 * 34 + 2)
    assert list((trained_cond / "plots").glob("progression_epoch=0002.png"))


def test_grid_rows_are_conditioned_on_their_class():
    from lightning_diffusion.callbacks import SampleGrid

    labels = SampleGrid(samples_per_row=3).grid_labels(4)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert SampleGrid().grid_labels(None) is None


def test_predict_writes_uint8_samples_and_grids(trained_cond, tmp_path):
    from lightning_diffusion.cli import main

    main(
        [
            "predict",
            "--config",
            str(trained_cond / "config.yaml"),
            "--ckpt_path",
            str(trained_cond / "checkpoints/last.ckpt"),
            "--model.sampler",
            "DPMSolverMultistepScheduler",
            "--model.num_inference_steps",
            "3",
            "--model.guidance_scale",
            "3.0",
            "--data.init_args.predict_num_samples",
            "30",
            "--data.init_args.predict_class_labels",
            "[7]",
            "--output_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    (npz,) = tmp_path.rglob("samples.npz")
    arrays = np.load(npz)
    assert arrays["samples"].shape == (30, 32, 32, 1) and arrays["samples"].dtype == np.uint8
    assert (arrays["class_labels"] == 7).all()
    assert len(list(npz.parent.glob("samples_grid_*.png"))) == 1


def test_export_conditional_unet_reloads_in_diffusers(trained_cond, tmp_path):
    import json

    from diffusers import DDPMScheduler, UNet2DModel

    from lightning_diffusion.tools.export import export

    folder = export(trained_cond / "checkpoints/last.ckpt", tmp_path / "export")
    unet = UNet2DModel.from_pretrained(folder / "unet")
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    info = json.loads((folder / "lightning_diffusion.json").read_text())
    assert info["num_classes"] == 10 and info["null_label"] == 10 and info["class_names"][3] == "3"
    x = torch.randn(2, 1, 32, 32)
    out = unet(x, torch.tensor([999, 10]), class_labels=torch.tensor([3, 10])).sample
    model = DiffusionModule.load_from_checkpoint(trained_cond / "checkpoints/last.ckpt")
    assert torch.allclose(out, model.denoiser(x, torch.tensor([999, 10]), torch.tensor([3, 10])), atol=1e-5)
    assert scheduler.config.num_train_timesteps == 1000
    with pytest.raises(FileExistsError, match="export to a new folder"):
        export(trained_cond / "checkpoints/last.ckpt", folder)


def test_unconditional_export_is_a_ddpm_pipeline_that_samples_as_the_model(tmp_path, fake_mnist_root, capsys):
    from diffusers import DDPMPipeline

    from lightning_diffusion.__main__ import main

    fit(
        MNIST,
        tmp_path,
        fake_mnist_root,
        "--trainer.max_steps",
        "2",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "1",
    )
    (ckpt,) = (tmp_path / "mnist" / "version_0" / "checkpoints").glob("last.ckpt")
    main(["export", str(ckpt), str(tmp_path / "pipe")])  # the command's entry point
    assert f"Exported to {tmp_path / 'pipe'}" in capsys.readouterr().out
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    noise = torch.Generator().manual_seed(0)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="pt", generator=noise).images
    # the pipeline clamps to [0, 1], so its range proves nothing: it must sample what the model samples with DDPM from
    # the same noise (the same weights, schedule, prediction type and data scaling; the model without its config's
    # timestep_spacing for DDIM, which the exported training schedule does not carry)
    model = DiffusionModule.load_from_checkpoint(ckpt, sampler_kwargs=None)
    x = model.sample(2, sampler="DDPMScheduler", num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert images.shape == x.shape == (2, 1, 32, 32)
    assert ((x > 0.01) & (x < 0.99)).float().mean() > 0.1  # enough values inside the clamp to compare
    assert torch.allclose(images, x.clamp(0, 1), atol=1e-4)


def test_export_command_refuses_a_2d_checkpoint_naming_its_denoiser(trained_moons, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "lightning_diffusion", "export", str(trained_moons.last), str(tmp_path / "export")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "MLPDenoiser" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "export").exists() and not list(tmp_path.iterdir())


def test_size_mismatch_names_both_values(run_cli, capsys, fake_mnist_root):
    with pytest.raises(SystemExit):
        run_cli(
            "fit",
            "--config",
            str(MNIST),
            *cpu_overrides(MNIST, fake_mnist_root),
            "--data.init_args.pad_to_32",
            "false",
            "--model.denoiser.init_args.block_out_channels",
            "[32, 32, 32, 32]",
        )
    err = capsys.readouterr().err
    assert "28x28" in err and "not divisible by 8" in err and "Traceback" not in err


def test_class_count_mismatch_names_both_values():
    from diffusers import DDPMScheduler

    unet = UNetDenoiser(sample_shape=(1, 32, 32), num_classes=2, block_out_channels=[32, 32], layers_per_block=1)
    with pytest.raises(ValueError, match="num_classes=2 but the data has 10"):
        DiffusionModule(denoiser=unet, scheduler=DDPMScheduler(), sample_shape=(1, 32, 32), num_classes=10)
