"""What every DataModule of the framework shares: the contract with the model and the predict requests."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from lightning_diffusion.errors import at_least


def _own_rng(shuffle: bool) -> torch.Generator | None:
    """Evaluation loaders get a generator of their own: creating a DataLoader iterator otherwise draws a seed from
    the global generator, so validating would shift the training's random stream (and exact resume would break).
    The training loader keeps the global one, whose state the checkpoints carry (callbacks.ExactResume)."""
    return None if shuffle else torch.Generator()


class SampleRequests(Dataset):
    """`predict` generates samples rather than reading data: item i is (class label of sample i (-1: none), i).

    The index seeds the sample's noise, so that sample i is the same whatever the batch size or the number of
    devices, and lets the writer put the samples of all ranks back in order."""

    def __init__(self, num_samples: int, class_labels: list[int] | None = None) -> None:
        self.num_samples = num_samples
        self.class_labels = class_labels

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        label = self.class_labels[i % len(self.class_labels)] if self.class_labels else -1
        return torch.tensor(label), torch.tensor(i)


class DiffusionDataModule(L.LightningDataModule):
    """Base class of the framework's DataModules.

    Subclasses define ``sample_shape``, ``num_classes``, ``data_mean`` and ``data_std`` (the CLI links them
    into the model, so the two cannot disagree) and yield batches ``(x,)`` or ``(x, y)`` with x in model space.

    Args:
        batch_size: Samples per batch (per device).
        num_workers: DataLoader worker processes.
        predict_num_samples: How many samples ``predict`` generates.
        predict_class_labels: Class labels for ``predict``, cycled over the samples (``None``: all classes in turn
            for a conditional model, no labels otherwise).
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        predict_num_samples: int = 1000,
        predict_class_labels: list[int] | None = None,
    ) -> None:
        super().__init__()
        at_least(type(self).__name__, 1, batch_size=batch_size)
        at_least(type(self).__name__, 0, num_workers=num_workers, predict_num_samples=predict_num_samples)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.predict_num_samples = predict_num_samples
        self.predict_class_labels = predict_class_labels

    # The contract with the model, linked by the CLI.
    @property
    def sample_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int | None:
        """How many classes a conditional model sees (None: unconditional): one per class name."""
        return len(self.class_names) if self.class_names else None

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes (index k is class k), for plots, logs and exports."""
        return None

    @property
    def data_mean(self) -> list[float]:
        """Per-channel mean that maps model space back to data space: x_data = x * std + mean."""
        raise NotImplementedError

    @property
    def data_std(self) -> list[float]:
        raise NotImplementedError

    def predict_dataloader(self) -> DataLoader:
        labels = self.predict_class_labels
        if labels is None and self.num_classes:
            labels = list(range(self.num_classes))
        if labels and not self.num_classes:
            raise ValueError(
                f"predict_class_labels {labels} were given, but the data has no classes (an "
                "unconditional model): drop them, or use labelled data (labels: true)."
            )
        if labels and self.num_classes and not all(0 <= c < self.num_classes for c in labels):
            raise ValueError(f"predict_class_labels {labels} must lie in [0, {self.num_classes - 1}] for this dataset.")
        return DataLoader(
            SampleRequests(self.predict_num_samples, labels), batch_size=self.batch_size, generator=_own_rng(False)
        )


def _collate_tuples(samples: list[tuple]) -> tuple[torch.Tensor, ...]:
    return tuple(default_collate(samples))  # default_collate turns tuples into lists; the contract says tuples


class ImageDataModule(DiffusionDataModule):
    """Base of the image DataModules: `setup` fills `self.splits` ("train", "val" and, where the data has one,
    "test") with datasets of ``(x,)`` or ``(x, y)`` items; the loaders are built here from the YAML options.

    Random horizontal flips (`random_flip`) are drawn here, on the training batch once it is on the device, from
    the global generator: the DataLoader workers draw nothing, so a resumed run (whose checkpoint carries the
    generator's state, callbacks.ExactResume) flips exactly as an uninterrupted one, with any number of workers.
    """

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        pin_memory: bool,
        persistent_workers: bool,
        predict_num_samples: int,
        predict_class_labels: list[int] | None,
        random_flip: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, predict_num_samples, predict_class_labels)
        self.pin_memory, self.persistent_workers, self.random_flip = pin_memory, persistent_workers, random_flip
        self.splits: dict[str, Dataset] = {}  # built by setup

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The shuffle draws from the global generator (its state is in the checkpoints); the workers' base seed from
        # the loader's own, so that recreating the iterator after a resume (persistent workers are created once in
        # an uninterrupted run) does not shift the global stream. Under DDP, Lightning puts a DistributedSampler here.
        dataset = self.splits[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=RandomSampler(dataset) if shuffle else None,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            collate_fn=_collate_tuples,
            generator=torch.Generator(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.splits else "val", shuffle=False)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, ...], dataloader_idx: int) -> tuple[torch.Tensor, ...]:
        if not (self.random_flip and self.trainer is not None and self.trainer.training):
            return batch
        x = batch[0]
        flip = torch.rand(len(x), device=x.device) < 0.5  # one coin per image, from the global generator
        return (torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), *batch[1:])
