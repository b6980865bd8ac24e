"""Celebrity faces from Hugging Face ``datasets`` (TMDB profile photos), square, conditioned on gender."""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from lightning_diffusion.data.base import ImageDataModule
from lightning_diffusion.data.images import CachedImages, files_digest, save_cache, square

_GENDERS = {1: 0, 2: 1}  # the dataset's gender codes (0 unknown, 1 female, 2 male, 3 non-binary) -> class labels
_CACHE_VERSION = 2  # bump when the decoding changes, so old caches are not reused


def _source_files(folder: str) -> list[str]:
    """The files of a local dataset folder: all of a `datasets.save_to_disk` folder, else its parquet files."""
    if any(os.path.isfile(os.path.join(folder, f)) for f in ("state.json", "dataset_dict.json")):
        found = glob.glob(os.path.join(glob.escape(folder), "**", "*"), recursive=True)
        return sorted(f for f in found if os.path.isfile(f))
    return sorted(glob.glob(os.path.join(glob.escape(folder), "**", "*.parquet"), recursive=True))


def _files_digest(folder: str) -> str | None:
    """What the decoded cache is keyed by beside the path: the source files' names, sizes and modification times
    (None when there are none to read), so that files replaced at the same path are decoded anew."""
    files = _source_files(folder)
    return files_digest(folder, files) if files else None


def _square(data: dict[str, Any], size: int) -> np.ndarray:
    """An undecoded ``image`` cell ({"bytes", "path"}) -> center-cropped, resized RGB uint8 (size, size, 3)."""
    return square(Image.open(io.BytesIO(data["bytes"]) if data.get("bytes") else data["path"]), size, 3)


class CelebFacesDataModule(ImageDataModule):
    """Celebrity faces (female / male), center-cropped to squares and scaled to [-1, 1] (data space [0, 1]).

    The images are decoded and resized once, by ``prepare_data``, into a uint8 cache in ``root/processed`` (one
    file per dataset, image size and, for a local folder, version of its files: names, sizes and modification times;
    reused by every later run, offline too, and logged; delete it to rebuild). Rows of gender
    1 (female, label 0) and 2 (male, label 1) are kept; images that fail to decode are skipped and counted.

    Args:
        dataset: A Hugging Face Hub dataset id (downloaded into ``root/raw/hf``), or a local folder of parquet
            files or of ``datasets.save_to_disk``; it needs an ``image`` column and an integer ``gender`` column.
        root: Folder that holds the downloads (``root/raw``) and the decoded cache (``root/processed``).
        image_size: Side of the square images.
        labels: Yield gender labels for a conditional model (2 classes: female, male).
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
        dataset: str = "ashraq/tmdb-celeb-10k",
        root: str = "data",
        image_size: int = 64,
        labels: bool = True,
        random_flip: bool = True,
        num_val_samples: int = 500,
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
        if image_size < 1 or num_val_samples < 0:
            raise ValueError(
                f"image_size ({image_size}) must be positive and num_val_samples ({num_val_samples}) not negative."
            )
        self.dataset, self.root, self.image_size, self.labels = dataset, root, image_size, labels
        self.num_val_samples, self.seed = num_val_samples, seed
        # A local path (it exists, or is spelled like one) or else a Hub id; the cache is named after it and, for a
        # local folder, after its files (names, sizes, modification times). Without the files (moved, or offline
        # on another machine), the newest cache of that path serves.
        self.local = os.path.exists(dataset) or dataset.startswith((".", "/", "~"))
        identity = os.path.realpath(os.path.expanduser(dataset)) if self.local else dataset
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", identity).strip("-.")[-40:]
        digest = hashlib.sha1(f"{identity}|{_CACHE_VERSION}".encode()).hexdigest()[:10]
        files = _files_digest(identity) if self.local else "hub"
        name = f"celeb_{slug}_{digest}_{{}}_train_{image_size}px.npz"
        self.cache_path = os.path.join(root, "processed", name.format(files or "nofiles"))
        if files is None:
            older = glob.glob(os.path.join(glob.escape(os.path.join(root, "processed")), name.format("*")))
            self.cache_path = max(older, key=os.path.getmtime, default=self.cache_path)
        self.hf_cache = os.path.join(root, "raw", "hf")  # where datasets downloads and converts the source

    # The contract with the model: known from the arguments alone, before any data is read.
    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    @property
    def num_classes(self) -> int | None:
        return 2 if self.labels else None

    @property
    def class_names(self) -> list[str] | None:
        return ["female", "male"] if self.labels else None

    @property
    def data_mean(self) -> list[float]:
        return [0.5, 0.5, 0.5]

    @property
    def data_std(self) -> list[float]:
        return [0.5, 0.5, 0.5]

    def _load_source(self):
        import datasets

        if not self.local:
            try:
                return datasets.load_dataset(self.dataset, split="train", cache_dir=self.hf_cache)
            except (OSError, datasets.exceptions.DatasetsError) as error:  # ConnectionError, DatasetNotFoundError
                cause = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                raise FileNotFoundError(
                    f"CelebFaces: could not load {self.dataset!r} from the Hugging Face Hub ({cause}) and no cache "
                    f"{self.cache_path} exists: run once with internet, or save it where there is internet with "
                    f"`datasets.load_dataset({self.dataset!r}, split='train').save_to_disk(FOLDER)` (or "
                    f"`huggingface-cli download {self.dataset} --repo-type dataset --local-dir FOLDER`) and set "
                    "dataset to FOLDER, or to any local folder of parquet files."
                ) from error
        folder = os.path.expanduser(self.dataset)
        if any(os.path.isfile(os.path.join(folder, f)) for f in ("state.json", "dataset_dict.json")):
            source = datasets.load_from_disk(folder)
            return source["train"] if isinstance(source, datasets.DatasetDict) else source
        files = _source_files(folder)
        if not files:
            raise FileNotFoundError(
                f"CelebFaces: {folder} is neither a folder of parquet files nor a datasets.save_to_disk folder: point "
                "dataset at one (or at a Hugging Face Hub id)."
            )
        return datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=self.hf_cache)

    def prepare_data(self) -> None:
        if os.path.isfile(self.cache_path):
            rank_zero_info(
                f"CelebFaces: using the decoded cache {self.cache_path} (delete it to decode {self.dataset} again)"
            )
            return
        import datasets

        source = self._load_source()
        missing = [c for c in ("image", "gender") if c not in source.column_names]
        if missing:
            raise ValueError(
                f"CelebFaces: {self.dataset} has no {' or '.join(missing)} column (found: "
                f"{', '.join(source.column_names)}); it needs `image` and an integer `gender` (1 female, 2 male)."
            )
        genders = np.asarray(source["gender"])
        kept = np.flatnonzero(np.isin(genders, list(_GENDERS)))
        if not len(kept):
            raise ValueError(
                f"CelebFaces: no row of {self.dataset} has gender 1 (female) or 2 (male) (found gender values "
                f"{sorted(set(genders.tolist()), key=str)}); point dataset at data with those labels."
            )

        # Decode ourselves, so that a corrupt image is skipped rather than fatal.
        rows = source.select_columns(["image", "gender"]).select(kept)
        rows = rows.cast_column("image", datasets.Image(decode=False))
        images = np.empty((len(kept), self.image_size, self.image_size, 3), dtype=np.uint8)
        labels = np.empty(len(kept), dtype=np.int64)
        count, first_failure = 0, None
        for batch in rows.iter(batch_size=256):
            for data, gender in zip(batch["image"], batch["gender"], strict=False):
                try:
                    images[count] = _square(data, self.image_size)
                except Exception as error:  # noqa: BLE001 - PIL raises many kinds on corrupt or unsupported files
                    first_failure = first_failure or error
                    continue
                labels[count], count = _GENDERS[gender], count + 1
        if not count:
            cause = re.sub(r" <[^>]* at 0x[0-9a-f]+>", "", " ".join(str(first_failure).split()))[:160]
            raise ValueError(
                f"CelebFaces: none of the {len(kept)} images of {self.dataset} with gender 1 or 2 could be decoded "
                f"(the first: {cause}): its image column must hold JPEG or PNG files (bytes or paths)."
            )

        save_cache(self.cache_path, images=images[:count], labels=labels[:count])
        rank_zero_info(
            f"CelebFaces: kept {count} of {len(genders)} rows (genders 1 and 2), skipped "
            f"{len(kept) - count} undecodable images; cached in {self.cache_path}"
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if not os.path.isfile(self.cache_path):
            raise FileNotFoundError(f"CelebFaces: no cache {self.cache_path}: call prepare_data() first (Trainers do).")
        with np.load(self.cache_path) as cache:
            images, labels = torch.from_numpy(cache["images"]), torch.from_numpy(cache["labels"])
        if not self.num_val_samples < len(images):
            raise ValueError(
                f"num_val_samples ({self.num_val_samples}) must be below the {len(images)} faces kept "
                f"from {self.dataset}."
            )
        # A fixed permutation of the kept faces: its first num_val_samples validate.
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        self.splits = {
            "train": CachedImages(images, labels, order[self.num_val_samples :], self.labels),
            "val": CachedImages(images, labels, order[: self.num_val_samples], self.labels),
        }
