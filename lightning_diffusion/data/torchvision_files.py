"""The files torchvision reads for MNIST, Fashion-MNIST and CIFAR-10, and the check that an IDX file is whole."""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

import numpy as np
from torchvision import datasets

ImageDatasetName = Literal["mnist", "fashion_mnist", "cifar10"]

_IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
_IDX_HINT = f"{', '.join(_IDX_FILES[:3])} and {_IDX_FILES[3]} (or their .gz)"
_IDX_MAGIC = {3: 0x803, 1: 0x801}  # unsigned bytes; 3 dimensions (images) or 1 (labels)


def idx_dims(path: str, ndim: int) -> tuple[int, ...]:
    """The dimensions in the header of an IDX file of unsigned bytes, after checking its magic number and that the
    file holds every byte the header announces; one sentence naming the file otherwise."""
    with open(path, "rb") as file:
        header = file.read(4 + 4 * ndim)
        size = os.fstat(file.fileno()).st_size
    magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if magic != _IDX_MAGIC[ndim] or len(header) < 4 + 4 * ndim:
        found = "it is shorter than its header" if magic is None else f"its magic number is 0x{magic:08x}"
        kind = "images" if ndim == 3 else "labels"
        raise ValueError(f"{path} is not an IDX file of {kind}: {found}, expected 0x{_IDX_MAGIC[ndim]:08x}")
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = len(header) + int(np.prod(dims))
    if size != expected:
        announced = f"{dims[0]} images of {dims[1]}x{dims[2]}" if ndim == 3 else f"{dims[0]} labels"
        problem = "truncated" if size < expected else "longer than its header says"
        raise ValueError(
            f"{path} is {problem}: its header announces {announced} ({expected} bytes), the file has {size}"
        )
    return dims


class TorchvisionSource(NamedTuple):
    dataset_class: type  # the torchvision dataset
    name: str
    folder: str  # under root, where torchvision reads the files
    files: list[str]  # the files it reads there
    hint: str  # what to tell the user to put there
    shape: tuple[int, int, int]


SOURCES = {
    "mnist": TorchvisionSource(
        datasets.MNIST, "MNIST", os.path.join("MNIST", "raw"), _IDX_FILES, _IDX_HINT, (1, 28, 28)
    ),
    "fashion_mnist": TorchvisionSource(
        datasets.FashionMNIST, "Fashion-MNIST", os.path.join("FashionMNIST", "raw"), _IDX_FILES, _IDX_HINT, (1, 28, 28)
    ),
    "cifar10": TorchvisionSource(
        datasets.CIFAR10,
        "CIFAR-10",
        "cifar-10-batches-py",
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
        "data_batch_1 to data_batch_5, test_batch and batches.meta (the contents of cifar-10-python.tar.gz)",
        (3, 32, 32),
    ),
}

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}
