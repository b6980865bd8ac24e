"""What the image sets that decode files share: one image of any mode to a square uint8 array, the fingerprint of
the files a cache was decoded from, the cache file, and the dataset over the cached images."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from lightning_diffusion.runs import write_atomically

_SIXTEEN_BITS = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit grayscale (PNG, TIFF) opens as one of these


def square(image: Image.Image, size: int, channels: int = 3) -> np.ndarray:
    """An image of any mode Pillow opens -> center-cropped, resized uint8 (size, size, channels), RGB (3) or
    grayscale (1): EXIF orientation applied, transparency composited over white, 16-bit values scaled to 8 bits."""
    mode = "RGB" if channels == 3 else "L"
    if image.format == "JPEG":
        image.draft(mode if image.mode in ("RGB", "L") else image.mode, (size, size))  # decode at a reduced scale
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BITS:
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    if image.mode not in ("RGB", "L"):  # CMYK, YCbCr, ...: through RGB, so grayscale is its luma (ITU-R 601-2)
        image = image.convert("RGB")
    image = image.convert(mode)
    width, height = image.size
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    pixels = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS, box=box), dtype=np.uint8)
    return pixels.reshape(size, size, channels)


def files_digest(folder: str | Path, files: Sequence[str | Path]) -> str:
    """A fingerprint of `files` (under `folder`): their names, sizes and modification times, so that a cache
    decoded from them is not reused once a file is added, removed or replaced at the same path."""
    stats = [(os.path.relpath(f, folder), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return hashlib.sha1(repr(stats).encode()).hexdigest()[:10]


def save_cache(path: str | Path, **arrays: np.ndarray) -> None:
    """The decoded arrays as one .npz, written whole or not at all (runs.write_atomically)."""
    write_atomically(Path(path), lambda file: np.savez(file, **arrays))


class CachedImages(Dataset):
    """Rows ``indices`` of cached uint8 images (N, H, W, C), as ``(x,)`` or ``(x, y)`` with x float CHW in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, use_labels: bool):
        self.images, self.labels, self.indices, self.use_labels = images, labels, indices, use_labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        row = self.indices[i]
        x = self.images[row].permute(2, 0, 1).float().div(127.5).sub(1.0)
        return (x, self.labels[row]) if self.use_labels else (x,)
