"""Any Hugging Face image dataset (a Hub id, or a local parquet or ``save_to_disk`` folder), decoded by ``datasets``."""

from __future__ import annotations

import glob
import io
import os
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from lightning_diffusion.data.base import ImageDataModule
from lightning_diffusion.data.images import CachedImages, square
from lightning_diffusion.errors import at_least


def _decode(batch: dict[str, list], column: str, size: int, channels: int) -> dict[str, list]:
    """A batch of undecoded image cells ({"bytes", "path"}) -> square uint8 pixels, and whether each decoded."""
    pixels, decoded = [], []
    for cell in batch[column]:
        try:
            with Image.open(io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]) as image:
                pixels.append(square(image, size, channels))
            decoded.append(True)
        except Exception:  # noqa: BLE001 - PIL raises many kinds on corrupt or unsupported files
            pixels.append(np.zeros((size, size, channels), dtype=np.uint8))
            decoded.append(False)
    return {"pixels": pixels, "decoded": decoded}


class HubImageDataModule(ImageDataModule):
    """The images of a Hugging Face dataset, center-cropped to squares, resized and scaled to [-1, 1] (data space
    [0, 1]), with optional class labels from one of its columns.

    ``datasets`` downloads and decodes: the decoding is a ``Dataset.map`` (``num_proc`` processes) whose result
    ``datasets`` caches under a fingerprint of the source and of the options, so a later run with the same ones
    reads it back, offline too. Rows whose image fails to decode are dropped and counted in one line.

    Args:
        dataset: A Hub dataset id, or a local folder of parquet files or of ``datasets.save_to_disk``.
        class_names: The names of the classes (index k is class k); with ``label_column``, required.
        image_column: The column of the images.
        label_column: The column of the class labels (None: unconditional).
        label_map: Maps the label column's values to classes, e.g. {1: 0, 2: 1}; rows of other values are
            dropped (None: the values are the classes).
        split: The split to read.
        root: Folder of the downloads and of ``datasets``' caches (``root/raw/hf``).
        image_size: Side of the square images.
        channels: 3 (RGB) or 1 (grayscale).
        num_proc: Processes that decode (None: one).
        random_flip: Flip training images horizontally at random.
        num_val_samples: Size of the validation split (it also serves ``test``).
        seed: Seed of the permutation that picks the validation split.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: Pin batches in page-locked memory for faster copies to the GPU.
        persistent_workers: Keep the worker processes alive between epochs (only with num_workers > 0).
        predict_num_samples: How many samples ``predict`` generates.
        predict_class_labels: Class labels for ``predict`` (see the base class).
    """

    def __init__(
        self,
        dataset: str,
        class_names: list[str] | None = None,
        image_column: str = "image",
        label_column: str | None = None,
        label_map: dict[int, int] | None = None,
        split: str = "train",
        root: str = "data",
        image_size: int = 64,
        channels: Literal[1, 3] = 3,
        num_proc: int | None = None,
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
        at_least(type(self).__name__, 1, image_size=image_size, num_proc=num_proc)
        at_least(type(self).__name__, 0, num_val_samples=num_val_samples)
        if channels not in (1, 3):
            raise ValueError(f"{type(self).__name__} channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        if (label_column is None) != (class_names is None):
            raise ValueError(
                "label_column and class_names go together: give both for a conditional model, neither for an "
                "unconditional one."
            )
        if label_map and class_names and not set(label_map.values()) <= set(range(len(class_names))):
            raise ValueError(
                f"label_map {label_map} maps to classes outside [0, {len(class_names) - 1}] of class_names "
                f"{class_names}: map to their indices."
            )
        self.dataset, self._class_names, self.image_column, self.label_column = (
            dataset,
            class_names,
            image_column,
            label_column,
        )
        self.label_map, self.split, self.root, self.image_size, self.channels = (
            label_map,
            split,
            root,
            image_size,
            channels,
        )
        self.num_proc, self.num_val_samples, self.seed = num_proc, num_val_samples, seed
        self.local = os.path.exists(os.path.expanduser(dataset)) or dataset.startswith((".", "/", "~"))
        self.hf_cache = os.path.join(root, "raw", "hf")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    @property
    def data_mean(self) -> list[float]:
        return [0.5] * self.channels

    @property
    def data_std(self) -> list[float]:
        return [0.5] * self.channels

    def _source(self):
        import datasets

        if not self.local:
            try:
                return datasets.load_dataset(self.dataset, split=self.split, cache_dir=self.hf_cache)
            except (OSError, datasets.exceptions.DatasetsError) as error:  # ConnectionError, DatasetNotFoundError
                cause = (str(error).strip().splitlines() or [type(error).__name__])[-1].rstrip(".")
                raise FileNotFoundError(
                    f"could not load {self.dataset!r} from the Hugging Face Hub ({cause}) and datasets holds no copy "
                    f"of it in {self.hf_cache}: run once with internet, or save it where there is internet with "
                    f"`datasets.load_dataset({self.dataset!r}, split={self.split!r}).save_to_disk(FOLDER)` (or "
                    f"`huggingface-cli download {self.dataset} --repo-type dataset --local-dir FOLDER`) and set "
                    "data.init_args.dataset to FOLDER, or to any local folder of parquet files."
                ) from error
        folder = os.path.expanduser(self.dataset)
        if any(os.path.isfile(os.path.join(folder, f)) for f in ("state.json", "dataset_dict.json")):
            source = datasets.load_from_disk(folder)
            return source[self.split] if isinstance(source, datasets.DatasetDict) else source
        files = sorted(glob.glob(os.path.join(glob.escape(folder), "**", "*.parquet"), recursive=True))
        if not files:
            raise FileNotFoundError(
                f"{folder} is neither a folder of parquet files nor a datasets.save_to_disk folder: point "
                "data.init_args.dataset at one (or at a Hugging Face Hub id)."
            )
        return datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=self.hf_cache)

    def _decoded(self) -> Any:
        """The decoded rows: `pixels` (uint8 HWC) and `label`, from datasets' cache when it has them."""
        import datasets

        source = self._source()
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        missing = [c for c in columns if c not in source.column_names]
        if missing:
            raise ValueError(
                f"{self.dataset} has no {' or '.join(missing)} column (found: {', '.join(source.column_names)}): set "
                "data.init_args.image_column and label_column to its columns."
            )
        rows = source.select_columns(columns)
        if self.label_map:
            wanted = set(self.label_map)
            rows = rows.filter(
                lambda labels: [v in wanted for v in labels], input_columns=self.label_column, batched=True
            )
            if not len(rows):
                found = sorted(set(source[self.label_column]), key=str)
                raise ValueError(
                    f"no row of {self.dataset} has a {self.label_column} in label_map {self.label_map} (found "
                    f"{found}): map the values it holds."
                )
        rows = rows.cast_column(self.image_column, datasets.Image(decode=False))
        shape = (self.image_size, self.image_size, self.channels)
        features = {"pixels": datasets.Array3D(shape, "uint8"), "decoded": datasets.Value("bool")}
        if self.label_column:
            features[self.label_column] = rows.features[self.label_column]
        decoded = rows.map(
            _decode,
            batched=True,
            fn_kwargs={"column": self.image_column, "size": self.image_size, "channels": self.channels},
            remove_columns=[self.image_column],
            num_proc=self.num_proc,
            features=datasets.Features(features),
        )
        decoded = decoded.filter(lambda ok: ok, input_columns="decoded")
        if not len(decoded):
            raise ValueError(
                f"none of the {len(rows)} images of {self.dataset} could be decoded: its {self.image_column} column "
                "must hold image files Pillow opens (bytes or paths)."
            )
        return (len(source), len(rows)), decoded

    def prepare_data(self) -> None:
        self._decoded()  # on one process per node: the download and the decoding land in datasets' cache

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        (total, mapped), rows = self._decoded()
        images = torch.from_numpy(np.asarray(rows.with_format("numpy")["pixels"], dtype=np.uint8))
        labels = torch.zeros(len(images), dtype=torch.long)
        if self.label_column:
            values = rows[self.label_column]
            labels = torch.tensor([self.label_map[v] if self.label_map else v for v in values], dtype=torch.long)
            if len(labels) and not (0 <= labels.min() and labels.max() < len(self._class_names)):
                raise ValueError(
                    f"{self.label_column} of {self.dataset} holds classes outside [0, {len(self._class_names) - 1}] "
                    "of class_names: give a label_map onto them."
                )
        dropped = f"{total - mapped} dropped by label_map, " if self.label_map else ""
        rank_zero_info(
            f"{self.dataset}: kept {len(images)} images of {total} rows ({dropped}{mapped - len(images)} undecodable)"
        )
        if not self.num_val_samples < len(images):
            raise ValueError(
                f"num_val_samples ({self.num_val_samples}) must be below the {len(images)} images decoded from "
                f"{self.dataset}: lower data.init_args.num_val_samples."
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        use_labels = self.label_column is not None
        self.splits = {
            "train": CachedImages(images, labels, order[self.num_val_samples :], use_labels),
            "val": CachedImages(images, labels, order[: self.num_val_samples], use_labels),
        }
