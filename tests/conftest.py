import os
import sys
from pathlib import Path

import pytest
import yaml

from fakes import make_dataset, write_cifar10, write_idx, write_parquet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks import their shared report module
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

os.environ.setdefault("WANDB_MODE", "offline")  # never a login prompt in tests


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """The CLI is driven through main(args); pytest's own arguments are not the CLI's."""
    monkeypatch.setattr("sys.argv", ["lightning_diffusion"])


@pytest.fixture
def run_cli(tmp_path):
    """Runs the real CLI in-process with outputs under tmp_path; returns the DiffusionCLI."""
    from lightning_diffusion.cli import main

    def run(*args: str):
        return main([*args, "--output_dir", str(tmp_path / "outputs"), "--trainer.enable_progress_bar", "false"])

    return run


@pytest.fixture(scope="session")
def fake_mnist_root(tmp_path_factory):
    """A data root with generated MNIST IDX files (300 train, 100 test) and CIFAR-10 batches (200 train, 40 test)
    where torchvision reads them."""
    root = tmp_path_factory.mktemp("data")
    write_idx(root / "MNIST" / "raw")
    write_cifar10(root / "cifar-10-batches-py")
    return root


@pytest.fixture(scope="session")
def fake_celeb_dir(tmp_path_factory):
    """A local parquet dataset with the columns of ashraq/tmdb-celeb-10k: portraits, genders 0-3, one bad image."""
    return write_parquet(tmp_path_factory.mktemp("celeb") / "tmdb", make_dataset())


def cpu_overrides(config: Path, data_root: Path, celeb_dir: Path | None = None) -> list[str]:
    """What a GPU-sized config needs to run in seconds on this CPU: the test data, fp32, tiny batches, 2 steps."""
    parsed = yaml.safe_load(config.read_text())
    if parsed["data"]["class_path"].endswith("Toy2DDataModule"):
        return []
    classifier = parsed["model"].get("class_path", "").endswith("ImageClassifier")
    if parsed["data"]["class_path"].endswith("CelebFacesDataModule"):
        data = ["--data.init_args.dataset", str(celeb_dir), "--data.init_args.root", str(data_root),
                "--data.init_args.num_val_samples", "8"]
    else:
        data = ["--data.init_args.root", str(data_root), "--data.init_args.download", "false",
                "--data.init_args.num_val_samples", "16"]
    data += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true",
        "--data.init_args.num_workers", "0", "--data.init_args.pin_memory", "false",
        "--data.init_args.persistent_workers", "false", "--data.init_args.batch_size", "8",
    ]
    if classifier:
        return [*data, "--model.width", "8"]
    levels = len(parsed["model"]["denoiser"]["init_args"]["block_out_channels"])
    return [*data,
        # the config's UNet, as many levels and attention blocks, 32 channels wide
        "--model.denoiser.init_args.block_out_channels", str([32] * levels),
        "--data.init_args.predict_num_samples", "20", "--model.num_inference_steps", "2",
    ]
