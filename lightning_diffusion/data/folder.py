"""Any folder of images: one subfolder per class (conditional) or a flat folder (unconditional)."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from lightning_diffusion.data.base import ImageDataModule
from lightning_diffusion.data.images import CachedImages, files_digest, save_cache, square
from lightning_diffusion.errors import at_least

_CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused
_EXTENSIONS = {ext for ext, name in Image.registered_extensions().items() if name in Image.OPEN}


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _images_under(folder: str) -> list[str]:
    """The files under `folder` (at any depth, sorted) whose extension Pillow opens, hidden files and folders left
    out."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = sorted(filter(_visible, folders))
        found += [os.path.join(parent, f) for f in sorted(filter(_visible, files)) if _is_image_name(f)]
    return found


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in _EXTENSIONS


class ImageFolderDataModule(ImageDataModule):
    """The images of a folder, center-cropped to squares, resized and scaled to [-1, 1] (data space [0, 1]).

    A root whose subfolders hold images is labelled by them: class k is the k-th subfolder in sorted order (a
    subfolder without images is no class), and images directly in the root are left out. A root without such
    subfolders is one unconditional set. Files that are not images or are hidden are left out; images that cannot
    be decoded (truncated, corrupt) are skipped and named in one line. Every mode Pillow opens is converted to
    ``channels`` (EXIF orientation applied, transparency over white, 16 bits to 8).

    The images are decoded once, by ``prepare_data``, into a uint8 cache in ``cache_dir`` named after the folder,
    the image size, the channels and a fingerprint of the image files (names, sizes, modification times): a changed
    folder is decoded anew, and the cache it replaces is deleted.

    Args:
        root: The folder of images.
        image_size: Side of the square images.
        channels: 3 (RGB) or 1 (grayscale).
        labels: Yield the subfolders' class labels for a conditional model (false: every image under the root,
            unconditional).
        cache_dir: Folder of the decoded caches.
        random_flip: Flip training images horizontally at random.
        num_val_samples: Size of the validation split (it also serves ``test``).
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
        root: str,
        image_size: int = 64,
        channels: Literal[1, 3] = 3,
        labels: bool = True,
        cache_dir: str = "data/processed",
        random_flip: bool = True,
        num_val_samples: int = 100,
        seed: int = 0,
        batch_size: int = 64,
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
        at_least(type(self).__name__, 1, image_size=image_size)
        at_least(type(self).__name__, 0, num_val_samples=num_val_samples)
        if channels not in (1, 3):
            raise ValueError(f"{type(self).__name__} channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        self.root, self.image_size, self.channels, self.labels = os.path.expanduser(root), image_size, channels, labels
        self.cache_dir, self.num_val_samples, self.seed = cache_dir, num_val_samples, seed

    @cached_property
    def _listing(self) -> tuple[list[str], list[str], list[int]]:
        """The class names (none: unconditional), the image files and their labels (-1: none), before decoding."""
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"ImageFolder: {self.root} is not a folder: set data.init_args.root to one.")
        subfolders = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and _visible(e.name))
        per_class = {name: _images_under(os.path.join(self.root, name)) for name in subfolders}
        classes = [name for name in subfolders if per_class[name]]
        if self.labels and classes:
            files = [f for name in classes for f in per_class[name]]
            return classes, files, [k for k, name in enumerate(classes) for _ in per_class[name]]
        files = _images_under(self.root)
        return [], files, [-1] * len(files)

    @property
    def cache_path(self) -> str:
        _, files, _ = self._listing
        if not files:
            raise ValueError(
                f"ImageFolder: {self.root} holds no image files (by their extension, hidden ones left out): point "
                "data.init_args.root at a folder of images or of one subfolder of images per class."
            )
        identity = os.path.realpath(self.root)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", identity).strip("-.")[-40:]
        options = f"{identity}|{self.labels}|{_CACHE_VERSION}"
        digest = hashlib.sha1(options.encode()).hexdigest()[:10]
        name = f"folder_{slug}_{digest}_{self.image_size}px_{self.channels}ch_{{}}.npz"
        return os.path.join(self.cache_dir, name.format(files_digest(self.root, files)))

    # The contract with the model: the shape from the arguments, the classes from the folder names.
    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def class_names(self) -> list[str] | None:
        return self._listing[0] or None

    @property
    def data_mean(self) -> list[float]:
        return [0.5] * self.channels

    @property
    def data_std(self) -> list[float]:
        return [0.5] * self.channels

    def prepare_data(self) -> None:
        path = self.cache_path
        if os.path.isfile(path):
            return
        _, files, labels = self._listing
        images = np.empty((len(files), self.image_size, self.image_size, self.channels), dtype=np.uint8)
        kept = []
        for i, file in enumerate(files):
            try:
                with Image.open(file) as image:
                    images[len(kept)] = square(image, self.image_size, self.channels)
            except Exception:  # noqa: BLE001 - PIL raises many kinds on corrupt, truncated or unsupported files
                continue
            kept.append(i)
        if not kept:
            raise ValueError(
                f"ImageFolder: none of the {len(files)} image files under {self.root} could be decoded (the first: "
                f"{files[0]}): point data.init_args.root at a folder of images Pillow opens."
            )
        decoded = set(kept)
        skipped = [os.path.relpath(f, self.root) for i, f in enumerate(files) if i not in decoded]
        older = glob.glob(glob.escape(path.rsplit("_", 1)[0]) + "_*.npz")  # the caches of the folder's earlier states
        save_cache(
            path,
            images=images[: len(kept)],
            labels=np.asarray(labels, dtype=np.int64)[kept],
            skipped=np.asarray(skipped, dtype=str),
        )
        for stale in older:
            os.remove(stale)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        path = self.cache_path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ImageFolder: no cache {path}: call prepare_data() first (Trainers do).")
        with np.load(path) as cache:
            images, labels = torch.from_numpy(cache["images"]), torch.from_numpy(cache["labels"])
            skipped = cache["skipped"].tolist()
        classes = self.class_names
        kinds = f" of {len(classes)} classes ({', '.join(classes)})" if classes else ""
        unread = f"; skipped {len(skipped)} unreadable: {', '.join(skipped)}" if skipped else ""
        rank_zero_info(f"ImageFolder: {len(images)} images{kinds} from {self.root}, cached in {path}{unread}")
        if not self.num_val_samples < len(images):
            raise ValueError(
                f"num_val_samples ({self.num_val_samples}) must be below the {len(images)} images decoded from "
                f"{self.root}: lower data.init_args.num_val_samples."
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        self.splits = {
            "train": CachedImages(images, labels, order[self.num_val_samples :], bool(classes)),
            "val": CachedImages(images, labels, order[: self.num_val_samples], bool(classes)),
        }
