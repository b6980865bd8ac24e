"""2D toy distributions: the seeds' moons and circles, plus swiss roll, 8 gaussians and checkerboard."""

from __future__ import annotations

from functools import cached_property
from typing import Literal, Optional

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons, make_swiss_roll
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from lightning_diffusion.data.base import DiffusionDataModule, _own_rng

Toy2DName = Literal["moons", "circles", "swissroll", "8gaussians", "checkerboard"]


def _eight_gaussians(n: int, noise: float, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.randint(0, 8, n)
    angles = labels * (2 * np.pi / 8)
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centers + noise * rng.randn(n, 2), labels


def _checkerboard(n: int, noise: float, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """4x4 board on [-2, 2]^2, points on the dark squares (as in Grathwohl et al. 2019, FFJORD)."""
    x1 = rng.rand(n) * 4 - 2
    column_parity = np.floor(x1) % 2
    x2 = rng.rand(n) - 2 * rng.randint(0, 2, n) + column_parity  # in [-2, 2), on the dark squares only
    points, labels = np.stack([x1, x2], 1), column_parity.astype(np.int64)
    return points + noise * rng.randn(n, 2), labels


def make_toy2d(name: Toy2DName, n: int, noise: float, seed: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """n points (n, 2) of a named distribution and their labels (or None where there are none)."""
    rng = np.random.RandomState(seed)
    if name == "moons":  # labels: which moon
        return make_moons(n, noise=noise, random_state=rng)
    if name == "circles":  # labels: outer (0) or inner (1) circle
        return make_circles(n, noise=noise, factor=0.5, random_state=rng)
    if name == "swissroll":
        points, _ = make_swiss_roll(n, noise=noise, random_state=rng)
        return points[:, [0, 2]], None
    if name == "8gaussians":  # labels: which gaussian
        return _eight_gaussians(n, noise, rng)
    if name == "checkerboard":
        return _checkerboard(n, noise, rng)
    raise ValueError(f"Unknown 2D dataset {name!r}: use one of moons, circles, swissroll, 8gaussians, checkerboard.")


_CLASS_NAMES = {
    "moons": ["upper moon", "lower moon"],
    "circles": ["outer circle", "inner circle"],
    "swissroll": None,
    "8gaussians": [f"gaussian {k}" for k in range(8)],
    "checkerboard": ["even column", "odd column"],
}


class Toy2DDataModule(DiffusionDataModule):
    """2D point clouds, standardized as (x - mean) / std with the training split's statistics.

    Args:
        dataset: Which distribution: moons, circles, swissroll, 8gaussians or checkerboard.
        num_samples: Size of the training split.
        num_val_samples: Size of the held-out validation split (an independent draw).
        noise: Standard deviation of the Gaussian noise added to the points.
        labels: Yield class labels (which moon, which circle, which gaussian, which square column) for a
            conditional model.
        seed: Seed of the draws; the same seed gives the same data.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        predict_num_samples: How many samples ``predict`` generates.
        predict_class_labels: Class labels for ``predict`` (see the base class).
    """

    def __init__(
        self,
        dataset: Toy2DName = "moons",
        num_samples: int = 20_000,
        num_val_samples: int = 4_000,
        noise: float = 0.05,
        labels: bool = False,
        seed: int = 0,
        batch_size: int = 512,
        num_workers: int = 0,
        predict_num_samples: int = 2_000,
        predict_class_labels: Optional[list[int]] = None,
    ) -> None:
        super().__init__(batch_size, num_workers, predict_num_samples, predict_class_labels)
        if dataset not in _CLASS_NAMES:
            raise ValueError(f"Unknown 2D dataset {dataset!r}: use one of {', '.join(_CLASS_NAMES)}.")
        if labels and _CLASS_NAMES[dataset] is None:
            raise ValueError(f"The {dataset} dataset has no labels: set labels to false or choose another dataset.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1 (the training split), got {num_samples}.")
        if num_val_samples < 1:
            raise ValueError(
                f"num_val_samples must be at least 1 (the validation split is drawn with this size), got "
                f"{num_val_samples}: to train without validation, set trainer.limit_val_batches 0 instead."
            )
        if noise < 0:
            raise ValueError(f"noise is the standard deviation of the added noise and cannot be negative, got {noise}.")
        self.dataset, self.num_samples, self.num_val_samples = dataset, num_samples, num_val_samples
        self.noise, self.labels, self.seed = noise, labels, seed

    @cached_property
    def _splits(self) -> dict[str, tuple[torch.Tensor, ...]]:
        # Independent draws for train and validation; standardized with the training statistics.
        train, train_y = make_toy2d(self.dataset, self.num_samples, self.noise, self.seed)
        val, val_y = make_toy2d(self.dataset, self.num_val_samples, self.noise, self.seed + 1)
        mean, std = train.mean(0), train.std(0)
        splits = {}
        for name, (points, y) in {"train": (train, train_y), "val": (val, val_y)}.items():
            x = torch.from_numpy((points - mean) / std).float()
            splits[name] = (x, torch.from_numpy(y).long()) if self.labels else (x,)
        splits["stats"] = (torch.from_numpy(mean).float(), torch.from_numpy(std).float())
        return splits

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def class_names(self) -> Optional[list[str]]:
        return _CLASS_NAMES[self.dataset] if self.labels else None

    @property
    def data_mean(self) -> list[float]:
        return self._splits["stats"][0].tolist()

    @property
    def data_std(self) -> list[float]:
        return self._splits["stats"][1].tolist()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # Whole batches are sliced out of the tensors in one indexing operation rather than per point.
        dataset = TensorDataset(*self._splits[split])
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        batches = BatchSampler(order, self.batch_size, drop_last=shuffle)
        return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=self.num_workers, generator=_own_rng(shuffle))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
