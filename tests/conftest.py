import os
import sys
from dataclasses import dataclass
from pathlib import Path

# One intra-op thread, here and in the CLI processes the tests start (they inherit it): on a small machine shared with
# other work, two OpenMP threads wait for each other at every small op (notes/benchmarks.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from helpers.fakes import make_dataset, write_cifar10, write_idx, write_image_folder, write_parquet  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # also if something imported torch before this file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks import their shared report module
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

os.environ.setdefault("WANDB_MODE", "offline")  # never a login prompt in tests
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "all")  # every deprecated call of ours, not only the first


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


TINY_DIT = [
    "--model.denoiser.init_args.depth",
    "2",
    "--model.denoiser.init_args.hidden_size",
    "32",
    "--model.denoiser.init_args.num_heads",
    "4",
]


def folder_shards(data_root: Path) -> Path:
    """litdata shards of write_image_folder's folder at 32x32 (12 training, 4 validation images), made once."""
    from lightning_diffusion.data import ImageFolderDataModule
    from lightning_diffusion.tools.prepare import prepare

    shards = data_root / "folder_shards"
    if not shards.is_dir():
        folder = data_root / "image_folder"
        if not folder.is_dir():
            write_image_folder(folder)
        data = ImageFolderDataModule(
            str(folder), image_size=32, cache_dir=str(data_root / "processed"), num_val_samples=4
        )
        prepare(data, shards, workers=1)
    return shards


def cpu_overrides(config: Path, data_root: Path, celeb_dir: Path | None = None) -> list[str]:
    """What a GPU-sized config needs to run in seconds on this CPU: the test data, fp32, tiny batches, 2 steps."""
    parsed = yaml.safe_load(config.read_text())
    if parsed["data"]["class_path"].endswith("Toy2DDataModule"):  # the config's own sampler, 10 steps, 64 samples
        return ["--model.num_inference_steps", "10", "--model.val_num_samples", "64"]
    classifier = parsed["model"].get("class_path", "").endswith("ImageClassifier")
    if parsed["data"]["class_path"].endswith("HubImageDataModule"):  # the generated tmdb parquet, at 32x32
        data = [
            "--data.init_args.dataset",
            str(celeb_dir),
            "--data.init_args.root",
            str(data_root),
            "--data.init_args.num_val_samples",
            "8",
            "--data.init_args.image_size",
            "32",
            "--data.init_args.num_proc",
            "null",
        ]
    elif parsed["data"]["class_path"].endswith("CelebFacesDataModule"):
        data = [
            "--data.init_args.dataset",
            str(celeb_dir),
            "--data.init_args.root",
            str(data_root),
            "--data.init_args.num_val_samples",
            "8",
        ]
    elif parsed["data"]["class_path"].endswith("StreamingImageDataModule"):  # shards of the awkward folder, 32x32
        data = ["--data.init_args.shards", str(folder_shards(data_root)), "--data.init_args.cache_dir", "null"]
    elif parsed["data"]["class_path"].endswith("ImageFolderDataModule"):  # the awkward folder, at 32x32
        folder = data_root / "image_folder"
        if not folder.is_dir():
            write_image_folder(folder)
        data = [
            "--data.init_args.root",
            str(folder),
            "--data.init_args.cache_dir",
            str(data_root / "processed"),
            "--data.init_args.num_val_samples",
            "4",
            "--data.init_args.image_size",
            "32",
        ]
    else:
        data = [
            "--data.init_args.root",
            str(data_root),
            "--data.init_args.download",
            "false",
            "--data.init_args.num_val_samples",
            "16",
        ]
    data += [
        "--trainer.accelerator",
        "cpu",
        "--trainer.precision",
        "32-true",
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.pin_memory",
        "false",
        "--data.init_args.persistent_workers",
        "false",
        "--data.init_args.batch_size",
        "8",
    ]
    if classifier:
        return [*data, "--model.width", "8"]
    denoiser = parsed["model"]["denoiser"]
    sampling = ["--data.init_args.predict_num_samples", "20", "--model.num_inference_steps", "2"]
    if denoiser["class_path"].endswith("DiTDenoiser"):  # the config's patches (so its tokens), 2 blocks 32 wide
        return [*data, *TINY_DIT, *sampling]
    levels = len(denoiser["init_args"]["block_out_channels"])
    return [
        *data,
        # the config's UNet, as many levels and attention blocks, 32 channels wide
        "--model.denoiser.init_args.block_out_channels",
        str([32] * levels),
        *sampling,
    ]


# configs/moons.yaml trained long enough to pass tests/helpers/quality.py: its v-prediction, EMA and cosine schedule,
# 24 epochs of batches of 256 at lr 0.002 (1872 steps), one validation at the end with 1000 samples of its DDPM
# sampler in 100 steps (the metrics' too: not the config's stochastic val_sampler).
MOONS_EPOCHS = 24
TRAINED_MOONS = [
    "--config",
    str(REPO / "configs/moons.yaml"),
    "--trainer.max_epochs",
    str(MOONS_EPOCHS),
    "--trainer.check_val_every_n_epoch",
    str(MOONS_EPOCHS),
    "--model.lr_scheduler.init_args.T_max",
    str(MOONS_EPOCHS),
    "--trainer.log_every_n_steps",
    "1",
    "--data.init_args.num_val_samples",
    "2000",
    "--model.val_num_samples",
    "1000",
    "--model.num_inference_steps",
    "100",
    "--data.init_args.batch_size",
    "256",
    "--model.optimizer.init_args.lr",
    "0.002",
    *("--model.val_sampler", "null", "--model.val_num_inference_steps", "null", "--model.val_sampler_kwargs", "null"),
]


@dataclass
class TrainedMoons:
    run: Path  # the run folder: config.yaml, metrics.csv, checkpoints/last.ckpt, plots/
    half_trained: Path | None = None  # the same run's checkpoint after 12 of its 24 epochs

    @property
    def last(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    def splits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The run's training and held-out points (model space, in order), rebuilt from its config.yaml."""
        from lightning_diffusion.data import Toy2DDataModule

        data = Toy2DDataModule(**yaml.safe_load((self.run / "config.yaml").read_text())["data"]["init_args"])
        return data._splits["train"][0], data._splits["val"][0]


@pytest.fixture(scope="session")
def trained_moons(tmp_path_factory) -> TrainedMoons:
    """The one moons training of the session (about 25 s), shared by every test that needs a trained moons model."""
    from lightning_diffusion.cli import main

    root = tmp_path_factory.mktemp("trained_moons")
    half = MOONS_EPOCHS // 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lightning_diffusion"])
        main(
            [
                "fit",
                *TRAINED_MOONS,
                "--output_dir",
                str(root / "outputs"),
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",  # the half-trained checkpoint
                "--trainer.callbacks.dirpath",
                str(root / "half"),
                "--trainer.callbacks.filename",
                "half-{epoch}",
                "--trainer.callbacks.every_n_epochs",
                str(half),
                "--trainer.callbacks.save_top_k",
                "-1",
                "--trainer.callbacks.save_on_train_epoch_end",
                "true",
            ]
        )
    return TrainedMoons(
        root / "outputs" / "moons" / "version_0", half_trained=root / "half" / f"half-epoch={half - 1}.ckpt"
    )
