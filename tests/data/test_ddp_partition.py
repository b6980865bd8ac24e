"""Under 2-process DDP on the CPU (gloo), one epoch shows each training sample once across the ranks: no overlap,
the same count on both, their union all that drop_last keeps; and the next epoch is shuffled anew."""

import io
import os
import struct
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from conftest import REPO, cpu_overrides
from helpers.fakes import write_parquet
from PIL import Image

from lightning_diffusion.data import Toy2DDataModule

pytestmark = pytest.mark.slow  # two processes per test


def fit_ddp(tmp_path, config, *extra):
    """Fits `config` on 2 CPU ranks, without validation; returns {(rank, epoch): the x of its training batches}."""
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / config),
        *extra,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--output_dir",
        str(tmp_path / "outputs"),
        "--trainer.callbacks+=helpers.sample_record.RecordTrainingSamples",
        f"--trainer.callbacks.folder={tmp_path / 'seen'}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "lightning_diffusion", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        (int(f.stem[4]), int(f.stem.rsplit("epoch", 1)[1])): torch.load(f) for f in (tmp_path / "seen").glob("*.pt")
    }


def assert_partitioned(ids: list[list[int]], per_rank: int, batch_size: int) -> None:
    """The ids each rank trained on: each once, none on both ranks, as many on each as drop_last keeps."""
    kept = per_rank // batch_size * batch_size
    assert [len(r) for r in ids] == [kept, kept]
    assert all(len(set(r)) == kept for r in ids), "a rank saw a sample twice"
    overlap = set(ids[0]) & set(ids[1])
    assert not overlap, f"{len(overlap)} of {kept} samples trained on both ranks"


def test_moons_epochs_are_partitioned_and_reshuffled(tmp_path):
    seen = fit_ddp(tmp_path, "moons.yaml", "--trainer.max_epochs", "2")
    train = Toy2DDataModule(num_samples=20_000, seed=0)._splits["train"][0]
    index = {tuple(row): i for i, row in enumerate(train.tolist())}
    ids = {key: [index[tuple(row)] for row in x.tolist()] for key, x in seen.items()}
    for epoch in (0, 1):
        assert_partitioned([ids[0, epoch], ids[1, epoch]], per_rank=10_000, batch_size=256)
    assert ids[0, 0] != ids[0, 1], "the second epoch repeated the first one's order"


def write_numbered_mnist(folder, num_train=300, num_test=20):
    """MNIST IDX files whose image i carries its number in its first two pixels (i // 256, i % 256)."""
    folder.mkdir(parents=True)
    for split, n in (("train", num_train), ("t10k", num_test)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_mnist_epoch_is_partitioned(tmp_path):
    write_numbered_mnist(tmp_path / "data" / "MNIST" / "raw")
    config = REPO / "configs" / "mnist.yaml"
    seen = fit_ddp(tmp_path, "mnist.yaml", *cpu_overrides(config, tmp_path / "data"), "--trainer.max_epochs", "1")
    ids = []
    for rank in (0, 1):
        pixels = ((seen[rank, 0][:, 0, 2, 2:4] + 1) * 127.5).round().long()  # pad_to_32: the image starts at (2, 2)
        ids.append((pixels[:, 0] * 256 + pixels[:, 1]).tolist())
    assert_partitioned(ids, per_rank=(300 - 16) // 2, batch_size=8)


def test_image_folder_epoch_is_partitioned(tmp_path):
    """60 flat grey images, image i of value 4 i (flips keep it); 4 held out."""
    (tmp_path / "photos").mkdir()
    for i in range(60):
        Image.new("RGB", (20, 16), (4 * i,) * 3).save(tmp_path / "photos" / f"{i:02d}.png")
    config = REPO / "configs" / "folder.yaml"
    unconditional = ["--model.guidance_scale", "1.0", "--model.label_dropout", "0.0", "--trainer.max_epochs", "1"]
    folder = ["--data.init_args.root", str(tmp_path / "photos"), "--data.init_args.image_size", "16"]
    seen = fit_ddp(tmp_path, "folder.yaml", *cpu_overrides(config, tmp_path / "data"), *folder, *unconditional)
    ids = [((seen[rank, 0][:, 0, 0, 0] + 1) * 127.5 / 4).round().long().tolist() for rank in (0, 1)]
    assert_partitioned(ids, per_rank=(60 - 4) // 2, batch_size=8)


def write_numbered_faces(folder, n=66):
    """A tmdb-like parquet: flat PNG image i of value 3 i, gender 1, 2, 0 in turn (the 0s dropped by the map)."""
    images = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 16), (3 * i,) * 3).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "gender": datasets.Value("int64")})
    rows = {"image": images, "gender": [(1, 2, 0)[i % 3] for i in range(n)]}
    return write_parquet(folder, datasets.Dataset.from_dict(rows, features=features))


@pytest.mark.parametrize("config", ["hub.yaml", "celeb_cond.yaml"])
def test_hub_and_celeb_epochs_are_partitioned(tmp_path, config, monkeypatch):
    """44 faces kept of 66 rows, 8 held out: 18 per rank, 16 of them in batches of 8."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    faces = write_numbered_faces(tmp_path / "faces")
    overrides = cpu_overrides(REPO / "configs" / config, tmp_path / "data", faces)
    seen = fit_ddp(tmp_path, config, *overrides, "--trainer.max_epochs", "1")
    ids = [((seen[rank, 0][:, 0, 0, 0] + 1) * 127.5 / 3).round().long().tolist() for rank in (0, 1)]
    assert all(i % 3 != 2 for r in ids for i in r)  # gender 0 rows never train
    assert_partitioned(ids, per_rank=(44 - 8) // 2, batch_size=8)
