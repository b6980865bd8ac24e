"""The image sets of torchvision: MNIST, Fashion-MNIST and CIFAR-10, in model space [-1, 1]."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.datasets import cifar

from lightning_diffusion.data.base import ImageDataModule
from lightning_diffusion.data.torchvision_files import CLASS_NAMES, SOURCES, ImageDatasetName, idx_dims
from lightning_diffusion.runs import write_atomically


class _TransformedSubset(Dataset):
    """Items ``indices`` of a torchvision dataset, transformed, as ``(x,)`` or ``(x, y)``."""

    def __init__(self, dataset: Dataset, indices: list[int], transform: Callable, labels: bool) -> None:
        self.dataset, self.indices, self.transform, self.labels = dataset, indices, transform, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        image, label = self.dataset[self.indices[i]]
        x = self.transform(image)
        return (x, label) if self.labels else (x,)


class TorchvisionDataModule(ImageDataModule):
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
        predict_class_labels: list[int] | None = None,
    ) -> None:
        super().__init__(
            batch_size,
            num_workers,
            pin_memory,
            persistent_workers,
            predict_num_samples,
            predict_class_labels,
            random_flip,
        )
        if dataset not in SOURCES:
            raise ValueError(f"Unknown image dataset {dataset!r}: use one of {', '.join(SOURCES)}.")
        self.dataset, self.root, self.download, self.labels = dataset, root, download, labels
        self.pad_to_32 = pad_to_32
        self.num_val_samples, self.seed = num_val_samples, seed
        self.source = SOURCES[dataset]
        self.folder = os.path.join(root, self.source.folder)  # where the files are read from

    # The contract with the model: known from the arguments alone, before any data is read.
    @property
    def sample_shape(self) -> tuple[int, ...]:
        channels, height, width = self.source.shape
        return (channels, 32, 32) if self.pad_to_32 else (channels, height, width)

    @property
    def class_names(self) -> list[str] | None:
        return CLASS_NAMES[self.dataset] if self.labels else None

    @property
    def data_mean(self) -> list[float]:
        return [0.5] * self.sample_shape[0]

    @property
    def data_std(self) -> list[float]:
        return [0.5] * self.sample_shape[0]

    def _missing_files(self) -> list[str]:
        return [f for f in self.source.files if not os.path.isfile(os.path.join(self.folder, f))]

    def _fix(self) -> str:
        return (
            f"put the original {self.source.name} files in {self.folder} (or delete them there and set download: true)"
        )

    def _check_idx_files(self) -> None:
        """MNIST and Fashion-MNIST: each IDX file whole, as many labels as images of 28x28, one sentence otherwise
        (torchvision would fail on a bare assert or read garbage)."""
        for split in ("train", "t10k"):
            images, labels = (
                os.path.join(self.folder, f"{split}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
            )
            try:
                count, height, width = idx_dims(images, 3)
                (num_labels,) = idx_dims(labels, 1)
            except ValueError as error:
                raise ValueError(f"{error}: {self._fix()}.") from error
            if (height, width) != self.source.shape[1:]:
                raise ValueError(
                    f"{images} holds {height}x{width} images, expected {self.source.shape[1]}x"
                    f"{self.source.shape[2]}: {self._fix()}."
                )
            if num_labels != count:
                raise ValueError(
                    f"{labels} holds {num_labels} labels but {images} holds {count} images: {self._fix()}."
                )

    def _check_labels(self, dataset: Any, split: str) -> None:
        """Labels are classes 0 to 9, as many as images; one sentence naming the split's files otherwise."""
        targets = torch.as_tensor(dataset.targets)
        files = {
            ("cifar10", True): "data_batch_1 to data_batch_5",
            ("cifar10", False): "test_batch",
        }.get((self.dataset, split == "train"), f"{'train' if split == 'train' else 't10k'}-labels-idx1-ubyte")
        where = f"{files} in {self.folder}"
        classes = len(CLASS_NAMES[self.dataset])
        if len(targets) != len(dataset.data):
            raise ValueError(f"{where} hold {len(targets)} labels for {len(dataset.data)} images: {self._fix()}.")
        if len(targets) and (targets.min() < 0 or targets.max() >= classes):
            raise ValueError(
                f"{where} hold labels from {targets.min().item()} to {targets.max().item()}, expected 0 to "
                f"{classes - 1} ({classes} classes): {self._fix()}."
            )

    def _corrupt_cifar_files(self) -> list[str]:
        """The CIFAR-10 files whose checksum is not the published one (torchvision only says that one is not)."""
        lists = self.source.dataset_class.train_list + self.source.dataset_class.test_list
        return [name for name, md5 in lists if not cifar.check_integrity(os.path.join(self.folder, name), md5)]

    def _error(self, problem: str, cause: BaseException | None = None) -> FileNotFoundError:
        # torchvision's messages span lines: keep the last one, the actual cause.
        reason = f" ({(str(cause).strip().splitlines() or [type(cause).__name__])[-1]})" if cause else ""
        return FileNotFoundError(f"{self.source.name} {problem}{reason}: put {self.source.hint} in {self.folder}.")

    def prepare_data(self) -> None:
        # torchvision reads the IDX files uncompressed and extracts only .gz files it has checksummed: extract any.
        for file in self._missing_files():
            if os.path.isfile(path := os.path.join(self.folder, file + ".gz")):
                target = Path(self.folder) / file  # a failed extraction leaves no file a rerun would trust
                try:
                    with gzip.open(path, "rb") as packed:
                        write_atomically(target, lambda unpacked, packed=packed: shutil.copyfileobj(packed, unpacked))
                except (EOFError, zlib.error, gzip.BadGzipFile) as error:
                    raise ValueError(f"{path} is not a readable gzip file ({error}): {self._fix()}.") from error
        if not self._missing_files():
            return
        if not self.download:
            raise self._error(f"not found in {self.folder} and download is off")
        try:
            self.source.dataset_class(self.root, train=True, download=True)
        except Exception as error:
            raise self._error(f"not found in {self.folder} and the download failed", error) from error

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self._missing_files():
            raise self._error(f"not found in {self.folder} (prepare_data downloads or extracts it)")
        if self.dataset != "cifar10":
            self._check_idx_files()
        try:  # torchvision checks CIFAR-10's checksums
            full_train = self.source.dataset_class(self.root, train=True)
            test = self.source.dataset_class(self.root, train=False)
        except (RuntimeError, EOFError, pickle.UnpicklingError) as error:  # torchvision's, or a damaged pickle
            corrupt = self._corrupt_cifar_files() if self.dataset == "cifar10" else []
            if corrupt:
                raise ValueError(
                    f"{', '.join(corrupt)} in {self.folder}: these files do not match the published checksums "
                    f"(truncated or altered): {self._fix()}."
                ) from error
            raise self._error(f"could not be read from {self.folder}", error) from error
        self._check_labels(full_train, "train")
        self._check_labels(test, "test")
        if not 0 <= self.num_val_samples < len(full_train):
            raise ValueError(
                f"num_val_samples ({self.num_val_samples}) must lie in [0, {len(full_train) - 1}]: the validation "
                f"split comes out of the {len(full_train)} training images."
            )

        # PIL image -> (pad with background) -> [0, 1] -> [-1, 1]; random flips come later, on the batch (base.py)
        pad = [transforms.Pad((32 - self.source.shape[2]) // 2, fill=0)] if self.pad_to_32 else []
        transform = transforms.Compose(
            pad + [transforms.ToTensor(), transforms.Normalize(self.data_mean, self.data_std)]
        )

        # A fixed permutation of the official training split: its first num_val_samples images validate.
        order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        self.splits = {
            "train": _TransformedSubset(full_train, order[self.num_val_samples :], transform, self.labels),
            "val": _TransformedSubset(full_train, order[: self.num_val_samples], transform, self.labels),
            "test": _TransformedSubset(test, list(range(len(test))), transform, self.labels),
        }


MNISTDataModule = TorchvisionDataModule  # the name of earlier configs, which keep working
