"""W&B without a server: offline, no prompt, the resolved config and the images in the run."""

import pytest
from conftest import REPO

from lightning_diffusion.loggers import wandb_credentials


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config" / "wandb"))


def test_credentials_detection(no_credentials, monkeypatch, tmp_path):
    assert not wandb_credentials()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_credentials()
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_credentials()


def test_offline_run_holds_the_config_and_the_images(no_credentials, run_cli, tmp_path, caplog):
    cli = run_cli(
        "fit",
        "--config",
        str(REPO / "configs/moons.yaml"),
        "--config",
        str(REPO / "configs/logger/wandb.yaml"),
        "--trainer.max_epochs",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--data.init_args.num_samples",
        "1024",
        "--data.init_args.num_val_samples",
        "256",
        "--model.val_num_samples",
        "64",
        "--model.num_inference_steps",
        "10",
    )
    import wandb

    wandb_logger = cli.trainer.loggers[1]
    assert type(wandb_logger).__name__ == "WandbLogger" and wandb_logger._offline
    config = dict(wandb_logger.experiment.config)  # the full resolved CLI config, not only the model's hparams
    assert config["seed_everything"] == 0 and config["model"]["init_args"]["prediction_type"] == "v_prediction"
    assert config["data"]["init_args"]["dataset"] == "moons" and config["experiment"] == "moons"
    assert wandb_logger.experiment.group == "moons" and "moons" in wandb_logger.experiment.tags
    assert wandb_logger.experiment.name == "moons/version_0"  # named after the local run folder
    wandb.finish()  # what the end of the process does
    assert "logging offline" in caplog.text
    experiment = tmp_path / "outputs" / "moons"
    # local artifacts are kept: the CSV logger owns the run folder
    assert (experiment / "version_0" / "config.yaml").is_file() and (experiment / "version_0" / "checkpoints").is_dir()
    (run,) = (experiment / "wandb").glob("offline-run-*")
    images = {p.name.split("_")[0] for p in (run / "files" / "media" / "images" / "plots").glob("*.png")}
    assert images == {"samples", "trajectory"}  # logged under the stable keys plots/samples, plots/trajectory


def test_sweep_command_drives_the_real_cli(run_cli, capsys):
    """The sweep's command with one of its parameter sets parses through the CLI as W&B would call it."""
    import yaml as _yaml

    sweep = _yaml.safe_load((REPO / "configs/sweeps/moons_lr.yaml").read_text())
    command = sweep["command"]
    assert command[2:4] == ["-m", "lightning_diffusion"]
    args = [a for a in command[4:] if not a.startswith("${")]
    args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
    overrides = [f"--{key}={spec['values'][-1]}" for key, spec in sweep["parameters"].items()]
    with pytest.raises(SystemExit):
        run_cli(*args, *overrides, "--print_config")
    config = _yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.004
    assert (
        config["model"]["init_args"]["prediction_type"] == "v_prediction" and config["experiment"] == "moons_lr_sweep"
    )
