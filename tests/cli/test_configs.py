"""The real CLI, in-process: every config runs, bad input fails in one sentence before training."""

import pytest
import yaml
from conftest import CONFIGS, cpu_overrides
from PIL import Image

FAST = ["--trainer.fast_dev_run", "true"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_runs_fast_dev_run(run_cli, config, tmp_path, fake_mnist_root, fake_celeb_dir, monkeypatch):
    """In test sizes on this CPU, but in the config's own precision (bf16-mixed for the images), so that what the
    config combines (e.g. mixed precision, gradient clipping and the optimizer) meets Lightning as on a GPU."""
    # generated CIFAR-10 batches cannot match the real checksums
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda path, md5=None: True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = cpu_overrides(config, fake_mnist_root, fake_celeb_dir)
    precision = str(yaml.safe_load(config.read_text())["trainer"].get("precision", "32-true"))
    if "--trainer.precision" in overrides:
        overrides[overrides.index("--trainer.precision") + 1] = precision
    cli = run_cli("fit", "--config", str(config), *FAST, *overrides)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1 and cli.trainer.precision == precision
    if type(cli.model).__name__ == "ImageClassifier":  # the offline judge: no samples to plot
        assert {"train/loss", "val/accuracy"} <= set(cli.trainer.callback_metrics)
        return
    plots = list((tmp_path / "outputs").rglob("*.png"))
    assert plots, "the plotting callbacks wrote nothing"
    if len(cli.datamodule.sample_shape) == 3:  # images: a sample grid, one row per class if conditional
        (grid,) = [p for p in plots if p.name.startswith("grid_")]
        (sample_grid,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "SampleGrid"]
        rows = cli.datamodule.num_classes or sample_grid.num_rows
        assert Image.open(grid).size[1] == rows * (cli.datamodule.sample_shape[1] + 2) + 2


def test_help_shows_every_option_with_its_docstring(run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--help")
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help wraps lines
    for option in ["--model.help", "--experiment", "--data", "data.num_classes --> model.init_args.num_classes"]:
        assert option in text
    from lightning_diffusion.cli import main

    with pytest.raises(SystemExit) as exit_info:  # the model's options: `fit --model.help DiffusionModule`
        main(["fit", "--model.help", "DiffusionModule"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in [
        "--model.prediction_type",
        "--model.formulation",
        "--model.sampler",
        "--model.val_num_samples",
        "--model.sample_metrics",
    ]:
        assert option in text
    assert "The sampler (``null``: the formulation's default)" in text
    with pytest.raises(SystemExit) as exit_info:  # a formulation's own options: `--model.formulation.help EDM`
        main(["fit", "--model.formulation.help", "lightning_diffusion.formulations.EDM"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ["--formulation.sigma_data", "--formulation.P_mean", "Mean of ln(sigma) in training"]:
        assert option in text


def test_print_config_shows_linked_model(run_cli, capsys):
    from conftest import REPO

    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(REPO / "configs/moons.yaml"), "--print_config")
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "lightning_diffusion.DiffusionModule"  # the default model
    assert config["model"]["init_args"]["denoiser"]["class_path"] == "lightning_diffusion.denoisers.MLPDenoiser"
    assert config["data"]["init_args"]["dataset"] == "moons" and config["seed_everything"] == 0


@pytest.mark.parametrize(
    "override,message",
    [
        (["--data.init_args.dataset", "spiral"], "spiral"),
        (["--model.not_an_option", "1"], "not_an_option"),
        (["--model.sampler", "NoSuchScheduler"], "Unknown sampler 'NoSuchScheduler'"),
        (["--model.num_inference_steps", "5000"], "num_inference_steps must be in [1, 1000]"),
        (["--model.guidance_scale", "3.0"], "needs a conditional model"),
    ],
)
def test_bad_input_is_one_sentence_before_training(run_cli, capsys, tmp_path, override, message):
    from conftest import REPO

    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(REPO / "configs/moons.yaml"), *override)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))  # nothing ran


def test_the_console_script_is_the_one_command():
    import importlib

    tomllib = pytest.importorskip("tomllib")
    from conftest import REPO

    from lightning_diffusion.__main__ import main

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["lightning-diffusion"].partition(":")
    assert getattr(importlib.import_module(module), name) is main
