"""Under 2-process DDP on the CPU (gloo), one epoch shows each training sample once across the ranks: no overlap,
the same count on both, their union all that drop_last keeps; and the next epoch is shuffled anew."""

import io
import json
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

pytestmark = pytest.mark.slow  # two processes


DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def command(folder, config, *extra):
    """A fit of `config` on 2 CPU ranks, without validation, recording each rank's training samples in folder/seen."""
    return [
        "fit",
        "--config",
        str(REPO / "configs" / config),
        *extra,
        *DDP,
        *("--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"),
        *("--output_dir", str(folder / "outputs")),
        "--trainer.callbacks+=helpers.sample_record.RecordTrainingSamples",
        f"--trainer.callbacks.folder={folder / 'seen'}",
    ]


def seen_in(folder):
    """{(rank, epoch): the x of its training batches} that a command recorded."""
    return {(int(f.stem[4]), int(f.stem.rsplit("epoch", 1)[1])): torch.load(f) for f in (folder / "seen").glob("*.pt")}


def run_in_one_launch(commands, timeout=600):
    """`commands` (CLI argument lists) one after the other in one DDP launch (tests/helpers/cli_commands.py: the
    ranks start once, each fit reuses the process group), with tests/helpers importable by the ranks."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "cli_commands.py"), json.dumps(commands)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def fit_ddp(tmp_path, config, *extra):
    """Fits `config` on 2 CPU ranks without validation; returns {(rank, epoch): the x of its training batches}."""
    run_in_one_launch([command(tmp_path, config, *extra)])
    return seen_in(tmp_path)


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """Every data module's fit in one DDP launch (tests/helpers/cli_commands.py: the ranks start once, each fit
    reuses the process group), {name: what its ranks trained on}; the data generated first."""
    root = tmp_path_factory.mktemp("partition")
    write_numbered_mnist(root / "data" / "MNIST" / "raw")
    (root / "photos").mkdir()
    for i in range(60):  # 60 flat grey images, image i of value 4 i (flips keep it); 4 held out
        Image.new("RGB", (20, 16), (4 * i,) * 3).save(root / "photos" / f"{i:02d}.png")
    faces = write_numbered_faces(root / "faces")
    unconditional = ["--model.guidance_scale", "1.0", "--model.label_dropout", "0.0"]
    folder = ["--data.init_args.root", str(root / "photos"), "--data.init_args.image_size", "16", *unconditional]
    runs = {
        "moons": ("moons.yaml", "--trainer.max_epochs", "2"),
        "mnist": ("mnist.yaml", *cpu_overrides(REPO / "configs/mnist.yaml", root / "data")),
        "folder": ("folder.yaml", *cpu_overrides(REPO / "configs/folder.yaml", root / "data"), *folder),
        **{
            name: (f"{name}.yaml", *cpu_overrides(REPO / f"configs/{name}.yaml", root / "data", faces))
            for name in ("hub", "celeb_cond")
        },
    }
    commands = [
        command(root / name, *args, *(() if name == "moons" else ("--trainer.max_epochs", "1")))
        for name, args in runs.items()
    ]
    run_in_one_launch(commands)
    return {name: seen_in(root / name) for name in runs}


def assert_partitioned(ids: list[list[int]], per_rank: int, batch_size: int) -> None:
    """The ids each rank trained on: each once, none on both ranks, as many on each as drop_last keeps."""
    kept = per_rank // batch_size * batch_size
    assert [len(r) for r in ids] == [kept, kept]
    assert all(len(set(r)) == kept for r in ids), "a rank saw a sample twice"
    overlap = set(ids[0]) & set(ids[1])
    assert not overlap, f"{len(overlap)} of {kept} samples trained on both ranks"


def test_moons_epochs_are_partitioned_and_reshuffled(seen):
    seen = seen["moons"]
    train = Toy2DDataModule(num_samples=20_000, seed=0)._splits["train"][0]
    index = {tuple(row): i for i, row in enumerate(train.tolist())}
    ids = {key: [index[tuple(row)] for row in x.tolist()] for key, x in seen.items()}
    for epoch in (0, 1):
        assert_partitioned([ids[0, epoch], ids[1, epoch]], per_rank=10_000, batch_size=1024)  # moons.yaml as shipped
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


def test_mnist_epoch_is_partitioned(seen):
    ids = []
    for rank in (0, 1):
        pixels = ((seen["mnist"][rank, 0][:, 0, 2, 2:4] + 1) * 127.5).round().long()  # pad_to_32: from (2, 2)
        ids.append((pixels[:, 0] * 256 + pixels[:, 1]).tolist())
    assert_partitioned(ids, per_rank=(300 - 16) // 2, batch_size=8)


def test_image_folder_epoch_is_partitioned(seen):
    ids = [((seen["folder"][rank, 0][:, 0, 0, 0] + 1) * 127.5 / 4).round().long().tolist() for rank in (0, 1)]
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


@pytest.mark.parametrize("name", ["hub", "celeb_cond"])
def test_hub_and_celeb_epochs_are_partitioned(seen, name):
    """44 faces kept of 66 rows, 8 held out: 18 per rank, 16 of them in batches of 8."""
    ids = [((seen[name][rank, 0][:, 0, 0, 0] + 1) * 127.5 / 3).round().long().tolist() for rank in (0, 1)]
    assert all(i % 3 != 2 for r in ids for i in r)  # gender 0 rows never train
    assert_partitioned(ids, per_rank=(44 - 8) // 2, batch_size=8)
