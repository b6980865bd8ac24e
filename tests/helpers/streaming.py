"""What the streaming tests share: a folder of numbered images (image i's first pixel holds i), its shards, the index
of a streamed image back to its number, and a SIGTERM to one rank of a DDP run."""

import os
import signal
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from lightning_diffusion.data import ImageFolderDataModule
from lightning_diffusion.tools.prepare import prepare


def write_numbered_folder(root: Path, n: int = 60, size: int = 16) -> Path:
    """n PNGs in two classes (a: even i, b: odd i), image i of colour (i % 256, i // 256, 7 (i % 32)) at its first
    pixel and random elsewhere, so the images differ everywhere and the first pixel names them."""
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        pixels[0, 0] = (i % 256, i // 256, 7 * (i % 32))
        folder = root / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
    return root


def folder_module(root: Path, cache: Path, num_val_samples: int = 4, size: int = 16) -> ImageFolderDataModule:
    data = ImageFolderDataModule(
        str(root), image_size=size, cache_dir=str(cache), num_val_samples=num_val_samples, random_flip=False
    )
    data.prepare_data()
    data.setup("fit")
    return data


def numbered_shards(tmp_path: Path, n: int = 60, num_val_samples: int = 4, workers: int = 1) -> Path:
    """The shards of a numbered folder (tmp_path/photos, decoded into tmp_path/cache) in tmp_path/shards."""
    root = write_numbered_folder(tmp_path / "photos", n)
    data = folder_module(root, tmp_path / "cache", num_val_samples)
    return prepare(data, tmp_path / "shards", workers=workers)


def numbers(x: torch.Tensor) -> list[int]:
    """The numbers of a batch of images in model space ([-1, 1]) by their first pixel (flips move it: none here)."""
    first = ((x[:, :, 0, 0] + 1) * 127.5).round().long()
    return (first[:, 0] + 256 * first[:, 1]).tolist()


class SigtermOnRank(Callback):
    """Sends this process SIGTERM before training step `step` on rank `rank` only (a DDP job whose one node is told
    to stop), for the subprocesses of the DDP resume tests."""

    def __init__(self, step: int, rank: int = 1) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
