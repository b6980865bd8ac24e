"""Images streamed from litdata shards (``python -m lightning_diffusion prepare`` writes them), local or on object
storage, each rank and worker reading its own part."""

from __future__ import annotations

import io
import json
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_diffusion.data.base import ImageDataModule

if TYPE_CHECKING:
    import litdata

METADATA = "metadata.json"  # beside the split folders: shape, classes, class names, normalization, sizes
SPLITS = ("train", "val")


def read_metadata(shards: str, storage_options: dict | None = None) -> dict[str, Any]:
    """The metadata of a shards folder (a local path or an object-store URL such as s3://bucket/set)."""
    from litdata.streaming.downloader import get_downloader

    path = f"{shards.rstrip('/')}/{METADATA}"
    try:
        if "://" in shards:  # s3://, gs://, ...: litdata's downloader for that store, with its credentials
            buffer = io.BytesIO()
            get_downloader(shards, "", [], storage_options).download_fileobj(path, buffer)
            return json.loads(buffer.getvalue())
        with open(os.path.expanduser(path)) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{shards} holds no readable {METADATA} ({type(error).__name__}): point data.init_args.shards at a folder "
            "that `python -m lightning_diffusion prepare` wrote."
        ) from error


class ToModelSpace:
    """Collates stored items ({"image": uint8 HWC, "label"}) into a batch (x,) or (x, y), x float NCHW in model
    space: the images stacked as uint8 and converted once per batch rather than one by one, in numpy (one thread:
    torch's threads in the main process would contend with training for the cores)."""

    def __init__(self, mean: list[float], std: list[float], labels: bool) -> None:
        self.mean, self.std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in (mean, std))
        self.labels = labels

    def __call__(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, ...]:
        x = np.stack([item["image"] for item in items]).transpose(0, 3, 1, 2).astype(np.float32, order="C")
        np.divide(x, 255, out=x)
        np.subtract(x, self.mean, out=x)
        np.divide(x, self.std, out=x)  # the in-memory sets' (x / 255 - mean) / std, bit for bit
        x = torch.from_numpy(x)
        return (x, torch.tensor([item["label"] for item in items], dtype=torch.long)) if self.labels else (x,)


def resumable_loader() -> type:
    """litdata's StreamingDataLoader, whose resumed epoch also ends where Lightning stops asking for batches."""
    import litdata

    class ResumableStreamingDataLoader(litdata.StreamingDataLoader):
        """litdata clears the flag of a loader resumed mid-epoch (`restore`) only when the epoch's iterator runs
        out, but Lightning takes len(loader) batches and leaves it: the flag would hold into the next epoch, which
        would then be empty. A new epoch's iterator clears it once the resumed epoch has yielded them all."""

        def __iter__(self) -> Any:
            if self.restore and self.state_dict()["num_samples_yielded"] >= len(self) * self.batch_size:
                self.restore = False
            return super().__iter__()

    return ResumableStreamingDataLoader


class StreamingImageDataModule(ImageDataModule):
    """The images of litdata shards: uint8 chunks of the train and val splits of any image DataModule, and the
    metadata the model needs (shape, classes, class names, normalization), written once by ``prepare``.

    Each split is a ``litdata.StreamingDataset`` built in the dataloader hook, on each rank once the process group
    is up, so that litdata gives every rank and every worker its own part of the chunks (Lightning puts no
    DistributedSampler on it). Training shuffles anew each epoch from ``seed`` and the loader's epoch, and drops
    the remainder so that every rank gets the same number of batches; validation reads in order, in the main
    process (equal parts per rank, split item by item, so that a small set still reaches every rank). The
    training loader's ``state_dict`` (where each worker stands in the epoch, the epoch) is saved in Lightning's
    checkpoints, so a run resumed from the middle of an epoch reads exactly the batches left. Chunks of a remote
    set are downloaded into ``cache_dir`` and evicted beyond ``max_cache_size``; a batch's memory, not the set's,
    is held. Shards without a validation split train with ``trainer.limit_val_batches 0`` (one sentence otherwise).

    Args:
        shards: The folder that ``prepare`` wrote: a local path or an object-store URL (``s3://bucket/set``;
            credentials as litdata takes them: the environment, or ``storage_options``).
        cache_dir: Where chunks of a remote set are cached (None: litdata's default).
        max_cache_size: The cache's budget on disk (litdata's format: "50GB", or a fraction of the free disk).
        storage_options: Options of the object store's client (e.g. endpoint_url, credentials).
        seed: Seed of the per-epoch shuffle (None: the run's seed_everything, 0 without one).
        random_flip: Flip training images horizontally at random.
        batch_size: Samples per batch (per device).
        num_workers: DataLoader worker processes (each reads its own chunks).
        pin_memory: Pin batches in page-locked memory for faster copies to the GPU.
        persistent_workers: Keep the worker processes alive between epochs (only with num_workers > 0).
        predict_num_samples: How many samples ``predict`` generates.
        predict_class_labels: Class labels for ``predict`` (see the base class).
    """

    def __init__(
        self,
        shards: str,
        cache_dir: str | None = None,
        max_cache_size: str | float = "50GB",
        storage_options: dict[str, Any] | None = None,
        seed: int | None = None,
        random_flip: bool = True,
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
        self.shards, self.cache_dir, self.max_cache_size = shards.rstrip("/"), cache_dir, max_cache_size
        self.storage_options, self.seed = storage_options or {}, seed

    @cached_property
    def metadata(self) -> dict[str, Any]:
        return read_metadata(self.shards, self.storage_options)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["sample_shape"])

    @property
    def class_names(self) -> list[str] | None:
        return self.metadata["class_names"]

    @property
    def data_mean(self) -> list[float]:
        return self.metadata["data_mean"]

    @property
    def data_std(self) -> list[float]:
        return self.metadata["data_std"]

    def setup(self, stage: str | None = None) -> None:
        validating = stage in ("validate", "test") or (
            stage == "fit" and (self.trainer is None or self.trainer.limit_val_batches != 0)
        )
        if validating:
            self._refuse_a_missing_validation_split()

    def _refuse_a_missing_validation_split(self) -> None:
        if not self.metadata["num_samples"].get("val"):
            raise ValueError(
                f"{self.shards} holds no validation split (prepared with num_val_samples 0): set "
                "trainer.limit_val_batches 0 to train without validation, or prepare the shards again with "
                "num_val_samples above 0."
            )

    def _dataset(self, split: str, shuffle: bool) -> litdata.StreamingDataset:
        import litdata

        seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        cache = os.path.join(self.cache_dir, split) if self.cache_dir else None
        return litdata.StreamingDataset(
            f"{self.shards}/{split}",
            cache_dir=cache,
            shuffle=shuffle,
            drop_last=True,  # every rank and worker the same number of samples
            seed=seed,
            max_cache_size=self.max_cache_size,
            storage_options=self.storage_options,
        )

    def _collate(self) -> ToModelSpace:
        return ToModelSpace(self.data_mean, self.data_std, labels=bool(self.class_names))

    def _streaming_loader(self, split: str, shuffle: bool) -> litdata.StreamingDataLoader:
        # The loader's own generator: creating its iterator then draws nothing from the global one (exact resume).
        return resumable_loader()(
            self._dataset(split, shuffle),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            drop_last=shuffle,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=self._collate(),
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> litdata.StreamingDataLoader:
        return self._streaming_loader("train", shuffle=True)

    def _evaluation_loader(self) -> DataLoader:
        # litdata splits a set over the ranks in whole batches of the StreamingDataLoader, so a validation set of
        # fewer than world_size batches would leave a rank without any (and Lightning stops). Read one item at a
        # time instead, in the main process: each rank gets an equal part (less under world_size items dropped).
        self._refuse_a_missing_validation_split()
        dataset = self._dataset("val", shuffle=False)
        return DataLoader(dataset, batch_size=self.batch_size, collate_fn=self._collate(), generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader()

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader()
