"""Write an image config's train and val sets as litdata shards, for data.StreamingImageDataModule.

    python -m lightning_diffusion prepare --config configs/folder.yaml --data.init_args.root photos \
        --shards shards/photos

The config's data (any image DataModule: a folder, a Hub dataset, CelebFaces, MNIST, CIFAR-10) is decoded as
training decodes it, and each split is written by `litdata.optimize` (``--workers`` processes, with a progress
bar) as chunks of uint8 images and their labels under <shards>/train and <shards>/val, with metadata.json beside
them (the shape, classes, class names and normalization the model needs). The folder appears whole or not at all.
Copy it to object storage (`s3://...`) to stream it to many nodes. Every option of the training commands applies.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser
from torch.utils.data import Dataset

from lightning_diffusion.cli import DiffusionCLI
from lightning_diffusion.data.base import ImageDataModule
from lightning_diffusion.data.streaming import METADATA, SPLITS
from lightning_diffusion.errors import PROGRAM, one_line_errors
from lightning_diffusion.runs import write_atomically, write_folder_atomically

COMMAND = f"{PROGRAM} prepare"


class StoredItems:
    """Item i of a split as it is stored: {"image": uint8 HWC array, "label": int (-1: none)}, the model-space x
    mapped back to data space [0, 1] by the data's mean and std and rounded to 8 bits."""

    def __init__(self, dataset: Dataset, mean: list[float], std: list[float]) -> None:
        self.dataset = dataset
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        pixels = ((item[0] * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)
        label = int(item[1]) if len(item) > 1 else -1
        return {"image": pixels.permute(1, 2, 0).contiguous().numpy(), "label": label}


def stored_items(folder: Path) -> int:
    """How many items the chunks of a litdata folder hold, by its index.json."""
    index = json.loads((folder / "index.json").read_text())
    return sum(chunk["chunk_size"] for chunk in index["chunks"])


def prepare(data: ImageDataModule, shards: str | Path, workers: int = 1, chunk_bytes: str = "64MB") -> Path:
    """Decodes `data`'s train and val splits and writes them as litdata shards with their metadata into `shards`.

    Args:
        data: An image DataModule (its splits are read after prepare_data and setup, as training reads them).
        shards: The folder to write; it must not exist yet (or be empty).
        workers: Processes that write the chunks.
        chunk_bytes: The size of a chunk (litdata's format, e.g. "64MB").
    """
    shards = Path(shards)
    if shards.exists() and (not shards.is_dir() or any(shards.iterdir())):
        raise FileExistsError(f"{shards} already exists and is not empty: prepare into a new folder.")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}.")
    if not isinstance(data, ImageDataModule):
        raise ValueError(
            f"prepare writes image data, but the config's data is {type(data).__name__}: use an image config."
        )
    data.prepare_data()
    data.setup("fit")
    sizes = {split: len(data.splits[split]) for split in SPLITS}
    if not sizes["train"]:
        raise ValueError("the config's data has no training images: nothing to prepare.")
    metadata = {
        "sample_shape": list(data.sample_shape),
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "data_mean": list(data.data_mean),
        "data_std": list(data.data_std),
        "num_samples": sizes,
        "source": type(data).__name__,
    }

    def write(partial: Path) -> None:
        import litdata

        for split in SPLITS:
            if not sizes[split]:
                continue
            litdata.optimize(
                fn=StoredItems(data.splits[split], metadata["data_mean"], metadata["data_std"]),
                inputs=list(range(sizes[split])),
                output_dir=str(partial / split),
                chunk_bytes=chunk_bytes,
                num_workers=min(workers, sizes[split]),
                keep_data_ordered=True,
                start_method="fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn",
                verbose=True,
            )
            written = stored_items(partial / split)
            if written != sizes[split]:  # litdata reports a worker that failed, but finishes all the same
                raise RuntimeError(
                    f"litdata wrote {written} of the {sizes[split]} {split} images (a writing process failed; its "
                    "error is above): fix it and prepare again."
                )
        write_atomically(partial / METADATA, json.dumps(metadata, indent=2))

    start, method = time.perf_counter(), multiprocessing.get_start_method(allow_none=True)
    try:
        write_folder_atomically(shards, write)
    finally:  # litdata sets the start method of the whole process
        multiprocessing.set_start_method(method, force=True)
    seconds = time.perf_counter() - start
    print(f"Prepared {sizes['train']} training and {sizes['val']} validation images in {shards} ({seconds:.1f} s)")
    return shards


class PrepareCLI(DiffusionCLI):
    """The training CLI without a subcommand (an experiment's --config and any of its options), with prepare's own."""

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        self.config.trainer.logger = False  # not a run: no loggers, so nothing is written under output_dir
        super().before_instantiate_classes()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--shards", type=str, required=True, help="The new folder of the shards.")
        parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Processes that write chunks.")
        parser.add_argument("--chunk_bytes", type=str, default="64MB", help='The size of a chunk, e.g. "64MB".')


def main(argv: list[str]) -> Path:
    """`python -m lightning_diffusion prepare --config ... --shards FOLDER`; an expected error is one line."""
    with one_line_errors(argv, COMMAND):
        description = __doc__.strip().splitlines()[0]
        cli = PrepareCLI(args=argv, run=False, parser_kwargs={"prog": COMMAND, "description": description})
        config: Namespace = cli.config
        return prepare(cli.datamodule, config.shards, config.workers, config.chunk_bytes)
