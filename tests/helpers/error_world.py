"""The folder the cases of tests/cli/test_errors.py run in (make_world): data with one fault each, configs,
checkpoints, a moons model trained 2 steps; and what a case wrote there (snapshot, written)."""

from __future__ import annotations

import contextlib
import os
import struct
import sys
from pathlib import Path

import datasets
import torch

from helpers.error_cases import CKPT, FIT
from helpers.fakes import GENDERS, make_dataset, write_cifar10, write_idx, write_parquet


def make_world(root: Path) -> None:
    """The files the cases need, in `root` (the cases run there): data with one fault each, configs, checkpoints."""
    from lightning_diffusion.cli import main

    data = root / "data"
    write_idx(data / "mnist/MNIST/raw")
    (data / "empty").mkdir(parents=True)
    faults = {
        "magic": lambda raw: _patch(raw / "train-images-idx3-ubyte", lambda b: bytes(4) + b[4:]),
        "truncated": lambda raw: _patch(raw / "train-images-idx3-ubyte", lambda b: b[:5000]),
        "count": lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 99) + bytes(99)),
        "range": lambda raw: (raw / "train-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, 300) + bytes([12]) * 300
        ),
        "badgz": lambda raw: (
            (raw / "train-images-idx3-ubyte").unlink(),
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b?"),
        ),
    }
    for name, fault in faults.items():
        fault(write_idx(data / name / "MNIST/raw"))
    write_cifar10(data / "cifar/cifar-10-batches-py")
    write_parquet(data / "celeb_columns", make_dataset(GENDERS[:6], corrupt=False, columns=("picture", "gender")))
    write_parquet(data / "celeb_broken", undecodable_faces())

    (root / "bad.yaml").write_text("experiment: bad\ntrainer: [max_epochs: 1\n")
    (root / "typo.yaml").write_text("trainer:\n  max_epoch: 3\n")
    (root / "a_file").write_text("a file where a folder is expected\n")
    (root / "text.ckpt").write_text("not a checkpoint\n")
    with contextlib.chdir(root), _argv(["lightning_diffusion"]):
        main(
            [
                *FIT,
                "--output_dir",
                "out",
                "--experiment",
                "trained",
                "--trainer.max_steps",
                "2",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
            ]
        )
    good = (root / CKPT).resolve().read_bytes()
    (root / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    checkpoint = torch.load(root / CKPT, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"] = {
        "_class_path": "lightning_diffusion.metrics.classifier.ImageClassifier",
        "sample_shape": (1, 28, 28),
        "num_classes": 10,
        "num_features": 128,
    }
    torch.save(checkpoint, root / "classifier.ckpt")
    (root / "metrics.yaml").write_text(
        "model:\n  val_num_samples: 8\n  sample_metrics:\n"
        "    - class_path: lightning_diffusion.metrics.features.ClassifierMetrics\n"
        f"      init_args:\n        checkpoint: {CKPT}\n"
    )
    (root / "exports/full").mkdir(parents=True)
    (root / "exports/full/keep.txt").write_text("a user's file\n")
    for version, content in (("version_0", good), ("version_1", good[:1000])):  # the newest one is damaged
        folder = root / "out/fallback" / version / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(content)
        os.utime(folder / "last.ckpt", (1e9, 1e9 + int(version[-1])))


def undecodable_faces() -> datasets.Dataset:
    """Rows of the celeb columns whose images are not images."""
    features = datasets.Features({"image": datasets.Image(), "gender": datasets.Value("int64")})
    rows = {"image": [{"bytes": b"not an image", "path": None}] * 4, "gender": [1, 2, 1, 2]}
    return datasets.Dataset.from_dict(rows, features=features)


@contextlib.contextmanager
def _argv(argv: list[str]):
    saved, sys.argv = sys.argv, argv  # main(args) is the command line; pytest's own arguments are not
    try:
        yield
    finally:
        sys.argv = saved


def _patch(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (but datasets' own download cache) with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and "hf" not in p.relative_to(root).parts
    }


def written(before: dict, after: dict) -> list[str]:
    return sorted(name for name in after if before.get(name) != after[name])
