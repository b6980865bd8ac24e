"""Small image datasets from torchvision: MNIST, Fashion-MNIST and CIFAR-10, in model space [-1, 1]."""

from __future__ import annotations

import gzip
import os
import shutil
from typing import Any, Callable, Literal, NamedTuple, Optional

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from lightning_diffusion.data.base import ImageDataModule

ImageDatasetName = Literal["mnist", "fashion_mnist", "cifar10"]

_IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
_IDX_HINT = f"{', '.join(_IDX_FILES[:3])} and {_IDX_FILES[3]} (or their .gz)"


class _Source(NamedTuple):
    dataset_class: type  # the torchvision dataset
    name: str
    folder: str  # under root, where torchvision reads the files
    files: list[str]  # the files it reads there
    hint: str  # what to tell the user to put there
    shape: tuple[int, int, int]


_SOURCES = {
    "mnist": _Source(datasets.MNIST, "MNIST", os.path.join("MNIST", "raw"), _IDX_FILES, _IDX_HINT, (1, 28, 28)),
    "fashion_mnist": _Source(
        datasets.FashionMNIST, "Fashion-MNIST", os.path.join("FashionMNIST", "raw"), _IDX_FILES, _IDX_HINT, (1, 28, 28)
    ),
    "cifar10": _Source(
        datasets.CIFAR10,
        "CIFAR-10",
        "cifar-10-batches-py",
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
        "data_batch_1 to data_batch_5, test_batch and batches.meta (the contents of cifar-10-python.tar.gz)",
        (3, 32, 32),
    ),
}

_CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


class _Split(Dataset):
    """Items ``indices`` of a torchvision dataset, transformed, as ``(x,)`` or ``(x, y)``."""

    def __init__(self, dataset: Dataset, indices: list[int], transform: Callable, labels: bool) -> None:
        self.dataset, self.indices, self.transform, self.labels = dataset, indices, transform, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        image, label = self.dataset[self.indices[i]]
        x = self.transform(image)
        return (x, label) if self.labels else (x,)


class MNISTDataModule(ImageDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10 images scaled to [-1, 1] (data space [0, 1]: mean 0.5, std 0.5).

    The files are read where torchvision puts them: ``root/MNIST/raw``, ``root/FashionMNIST/raw`` or
    ``root/cifar-10-batches-py``. The validation split is held out of the official training split; the official
    test split serves ``test``.

    Args:
        dataset: Which dataset: mnist, fashion_mnist or cifar10.
        root: Folder that holds (or receives) the dataset files.
        download: Download the files when they are missing.
        labels: Yield class labels for a conditional model (10 classes).
        pad_to_32: Pad 28x28 images with background to 32x32, so deeper UNets divide evenly (CIFAR-10 is 32x32).
        random_flip: Flip training images horizontally at random (off: digits are not flip-symmetric).
        num_val_samples: Size of the validation split taken out of the official training split.
        seed: Seed of the permutation that picks the validation split; the same seed gives the same split.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: Pin batches in page-locked memory for faster copies to the GPU.
        persistent_workers: Keep the worker processes alive between epochs (only with num_workers > 0).
        predict_num_samples: How many samples ``predict`` generates.
        predict_class_labels: Class labels for ``predict`` (see the base class).
    """

    def __init__(
        self,
        dataset: ImageDatasetName = "mnist",
        root: str = "data",
        download: bool = True,
        labels: bool = False,
        pad_to_32: bool = False,
        random_flip: bool = False,
        num_val_samples: int = 5000,
        seed: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        predict_num_samples: int = 64,
        predict_class_labels: Optional[list[int]] = None,
    ) -> None:
        super().__init__(
            batch_size, num_workers, pin_memory, persistent_workers, predict_num_samples, predict_class_labels
        )
        if dataset not in _SOURCES:
            raise ValueError(f"Unknown image dataset {dataset!r}: use one of {', '.join(_SOURCES)}.")
        self.dataset, self.root, self.download, self.labels = dataset, root, download, labels
        self.pad_to_32, self.random_flip = pad_to_32, random_flip
        self.num_val_samples, self.seed = num_val_samples, seed
        self.source = _SOURCES[dataset]
        self.folder = os.path.join(root, self.source.folder)  # where the files are read from

    # The contract with the model: known from the arguments alone, before any data is read.
    @property
    def sample_shape(self) -> tuple[int, ...]:
        channels, height, width = self.source.shape
        return (channels, 32, 32) if self.pad_to_32 else (channels, height, width)

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.class_names) if self.class_names else None

    @property
    def class_names(self) -> Optional[list[str]]:
        return _CLASS_NAMES[self.dataset] if self.labels else None

    @property
    def data_mean(self) -> list[float]:
        return [0.5] * self.sample_shape[0]

    @property
    def data_std(self) -> list[float]:
        return [0.5] * self.sample_shape[0]

    def _missing_files(self) -> list[str]:
        return [f for f in self.source.files if not os.path.isfile(os.path.join(self.folder, f))]

    def _error(self, problem: str, cause: Optional[BaseException] = None) -> FileNotFoundError:
        # torchvision's messages span lines: keep the last one, the actual cause.
        reason = f" ({(str(cause).strip().splitlines() or [type(cause).__name__])[-1]})" if cause else ""
        return FileNotFoundError(f"{self.source.name} {problem}{reason}: put {self.source.hint} in {self.folder}.")

    def prepare_data(self) -> None:
        # torchvision reads the IDX files uncompressed and extracts only .gz files it has checksummed: extract any.
        for file in self._missing_files():
            if os.path.isfile(path := os.path.join(self.folder, file + ".gz")):
                with gzip.open(path, "rb") as packed, open(os.path.join(self.folder, file), "wb") as unpacked:
                    shutil.copyfileobj(packed, unpacked)
        if not self._missing_files():
            return
        if not self.download:
            raise self._error(f"not found in {self.folder} and download is off")
        try:
            self.source.dataset_class(self.root, train=True, download=True)
        except Exception as error:
            raise self._error(f"not found in {self.folder} and the download failed", error) from error

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        if self._missing_files():
            raise self._error(f"not found in {self.folder} (prepare_data downloads or extracts it)")
        try:  # torchvision checks CIFAR-10's checksums
            full_train = self.source.dataset_class(self.root, train=True)
            test = self.source.dataset_class(self.root, train=False)
        except RuntimeError as error:
            raise self._error(f"could not be read from {self.folder}", error) from error
        if not 0 <= self.num_val_samples < len(full_train):
            raise ValueError(
                f"num_val_samples ({self.num_val_samples}) must lie in [0, {len(full_train) - 1}]: the validation "
                f"split comes out of the {len(full_train)} training images."
            )

        # PIL image -> (pad with background) -> (flip) -> [0, 1] -> [-1, 1]
        pad = [transforms.Pad((32 - self.source.shape[2]) // 2, fill=0)] if self.pad_to_32 else []
        flip = [transforms.RandomHorizontalFlip()] if self.random_flip else []
        to_model_space = [transforms.ToTensor(), transforms.Normalize(self.data_mean, self.data_std)]
        evaluate, train = transforms.Compose(pad + to_model_space), transforms.Compose(pad + flip + to_model_space)

        # A fixed permutation of the official training split: its first num_val_samples images validate.
        order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        self.splits = {
            "train": _Split(full_train, order[self.num_val_samples :], train, self.labels),
            "val": _Split(full_train, order[: self.num_val_samples], evaluate, self.labels),
            "test": _Split(test, list(range(len(test))), evaluate, self.labels),
        }
