"""Small generated datasets with the real on-disk formats, so tests never download."""

import gzip
import struct
from pathlib import Path

import numpy as np


def fake_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0..9 cycling; each image black with a white 6x6 square whose position depends on the label."""
    labels = np.arange(n, dtype=np.uint8) % 10
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 * label, 20 - 2 * label
        images[i, row : row + 6, col : col + 6] = 255
        images[i, 27, 0] = 128  # one mid-grey pixel
    return images, labels


def write_idx(folder: Path, num_train: int = 300, num_test: int = 100, gz: bool = False) -> Path:
    """The four files torchvision's MNIST reads, in IDX format (big-endian magic, dims, then uint8 data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num_train), ("t10k", num_test)):
        images, labels = fake_digits(n)
        files = {
            f"{split}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes(),
            f"{split}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes(),
        }
        for name, data in files.items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder
