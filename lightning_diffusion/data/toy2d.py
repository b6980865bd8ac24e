"""2D toy distributions: the seeds' moons and circles, plus swiss roll, 8 gaussians and checkerboard."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
import torch
from sklearn.datasets import make_circles, make_moons, make_swiss_roll
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from lightning_diffusion.data.base import DiffusionDataModule, _own_rng

Toy2DName = Literal["moons", "circles", "swissroll", "8gaussians", "checkerboard"]


def _eight_gaussians(
    n: int, noise: float, rng: np.random.RandomState, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.randint(0, 8, n) if labels is None else labels
    angles = labels * (2 * np.pi / 8)
    centers = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centers + noise * rng.randn(n, 2), labels


def _checkerboard(
    n: int, noise: float, rng: np.random.RandomState, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """4x4 board on [-2, 2]^2, points on the dark squares (as in Grathwohl et al. 2019, FFJORD); the label is the
    parity of the column (given `labels`: a column of that parity)."""
    if labels is None:
        x1 = rng.rand(n) * 4 - 2
    else:
        x1 = rng.rand(n) + 2 * rng.randint(0, 2, n) - 2 + labels  # the column starts at -2 or 0, plus the parity
    column_parity = np.floor(x1) % 2
    x2 = rng.rand(n) - 2 * rng.randint(0, 2, n) + column_parity  # in [-2, 2), on the dark squares only
    points, labels = np.stack([x1, x2], 1), column_parity.astype(np.int64)
    return points + noise * rng.randn(n, 2), labels


def make_toy2d(
    name: Toy2DName, n: int, noise: float, seed: int | np.random.RandomState
) -> tuple[np.ndarray, np.ndarray | None]:
    """n points (n, 2) of a named distribution and their labels (or None where there are none); moons and circles
    as sklearn makes them (evenly spaced angles, see draw_toy2d)."""
    rng = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
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


def draw_toy2d(
    name: Toy2DName, n: int, noise: float, rng: np.random.RandomState, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """n independent draws of the distribution that `make_toy2d`'s data represents, with the given class `labels`
    (one per point) or with classes drawn too (None).

    sklearn's make_moons and make_circles space their angles evenly and split the classes exactly in half: a
    training set of 20,000 such points stands for uniform angles on each class with equal class weights, which is
    what a model learns. Their sets are no independent samples of it (two sets are closer than two samples, the two
    halves of one set complementary, hence farther: an exact model scored 0.88 against that floor), so the floor
    needs these draws: the angle uniform at random, the class a fair coin. The other datasets already draw so."""
    if name == "swissroll":
        if labels is not None:
            raise ValueError("The swissroll dataset has no labels.")
        return make_toy2d(name, n, noise, rng)
    if name == "8gaussians":
        return _eight_gaussians(n, noise, rng, labels)
    if name == "checkerboard":
        return _checkerboard(n, noise, rng, labels)
    if name not in ("moons", "circles"):
        raise ValueError(
            f"Unknown 2D dataset {name!r}: use one of moons, circles, swissroll, 8gaussians, checkerboard."
        )
    labels = rng.randint(0, 2, n) if labels is None else labels
    if name == "moons":  # class 0: the upper arc (cos s, sin s); class 1: the lower (1 - cos s, 1/2 - sin s)
        s = rng.rand(n) * np.pi
        points = np.where(
            labels[:, None] == 0, np.stack([np.cos(s), np.sin(s)], 1), np.stack([1 - np.cos(s), 0.5 - np.sin(s)], 1)
        )
    else:  # class 0: the outer circle, radius 1; class 1: the inner, radius 0.5 (make_circles' factor)
        s = rng.rand(n) * 2 * np.pi
        points = np.where(labels[:, None] == 0, 1.0, 0.5) * np.stack([np.cos(s), np.sin(s)], 1)
    return points + noise * rng.randn(n, 2), labels


class _Rows(TensorDataset):
    """A TensorDataset whose batches are sliced out of the tensors in one indexing operation rather than per row
    (the DataLoader asks for a whole batch through ``__getitems__``)."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        return tuple(tensor[indices] for tensor in self.tensors)


def _whole_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return batch  # _Rows.__getitems__ gave the batch already


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
        predict_class_labels: list[int] | None = None,
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
    def splits(self) -> dict[str, TensorDataset]:
        """The training and validation splits as datasets of (x,) or (x, y) in model space (as ImageDataModule's)."""
        return {name: TensorDataset(*self._splits[name]) for name in ("train", "val")}

    def independent_draws(self, num_samples: int, count: int, labels: Tensor | None = None) -> list[Tensor]:
        """`count` sets of `num_samples` independent draws of the data distribution in model space (draw_toy2d), as
        an exact model samples it: the real-vs-real floors of the sample metrics. With `labels` (one per point),
        every set has these classes, as a conditional model's samples asked for them. Set j depends only on the
        data's seed and j, so every rank and every evaluation draws the same."""
        mean, std = (stat.numpy() for stat in self._splits["stats"])
        given = None if labels is None else labels.cpu().numpy()
        draws = []
        for j in range(count):
            points, _ = draw_toy2d(
                self.dataset, num_samples, self.noise, np.random.RandomState([self.seed, 2, j]), given
            )
            draws.append(torch.from_numpy((points - mean) / std).float())
        return draws

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def class_names(self) -> list[str] | None:
        return _CLASS_NAMES[self.dataset] if self.labels else None

    @property
    def data_mean(self) -> list[float]:
        return self._splits["stats"][0].tolist()

    @property
    def data_std(self) -> list[float]:
        return self._splits["stats"][1].tolist()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # A plain sampler and batch_size, so that under DDP Lightning puts its DistributedSampler (the run's seed,
        # reshuffled every epoch) in the RandomSampler's place; the rows still come as whole batches (_Rows).
        dataset = _Rows(*self._splits[split])
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=RandomSampler(dataset) if shuffle else None,
            drop_last=shuffle,
            num_workers=self.num_workers,
            collate_fn=_whole_batch,
            generator=_own_rng(shuffle),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
