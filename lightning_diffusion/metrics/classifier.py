"""ImageClassifier: a small CNN trained on the same DataModule, whose features and predictions score samples offline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_diffusion.optim import SharedFactory, configure_optimizers


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    groups = min(8, c_out)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(groups, c_out), nn.SiLU())


class ImageClassifier(L.LightningModule):
    """Classifies images of a labelled DataModule, for the offline sample metrics of `ClassifierMetrics`.

    Three stages of two 3x3 convolutions (the first of stages 2 and 3 strided), pooled to 4x4 (where a stroke is
    matters, so no global pool) and a linear layer give ``num_features`` features (what the Frechet distance
    compares); a linear layer on them gives the logits.
    Trained through the same CLI: ``python -m lightning_diffusion fit --config configs/mnist_classifier.yaml``.

    Args:
        width: Channels of the first stage (then 2x and 4x).
        num_features: Size of the feature layer.
        dropout: Dropout on the features before the linear layer, in training.
        optimizer: Optimizer, given the parameters.
        lr_scheduler: Learning-rate scheduler, given the optimizer (``None``: constant).
        lr_scheduler_interval: Step the learning-rate scheduler every ``step`` or every ``epoch``.
        sample_shape: Shape of one image (C, H, W); linked from the data by the CLI.
        num_classes: Number of classes; linked from the data (which must have ``labels: true``).
        class_names: Names of the classes; linked from the data.
        data_mean: Per-channel mean of the data's normalization (x * std + mean is data space); linked from the data.
        data_std: Per-channel standard deviation, likewise.
    """

    def __init__(
        self,
        width: int = 32,
        num_features: int = 128,
        dropout: float = 0.1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "epoch",
        sample_shape: Sequence[int] = (1, 32, 32),
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        data_mean: list[float] | None = None,
        data_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        if not num_classes:
            raise ValueError("ImageClassifier needs labelled data: set `labels: true` in the data's init_args.")
        if len(sample_shape) != 3:
            raise ValueError(f"ImageClassifier needs images (C, H, W), got samples of shape {tuple(sample_shape)}.")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        channels = sample_shape[0]
        self.encoder = nn.Sequential(
            _block(channels, width, 1),
            _block(width, width, 1),
            _block(width, 2 * width, 2),
            _block(2 * width, 2 * width, 1),
            _block(2 * width, 4 * width, 2),
            _block(4 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(4 * width * 16, num_features),
            nn.SiLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)
        self.num_features = num_features
        self.optimizer_fn = SharedFactory(optimizer)
        self.lr_scheduler_fn = SharedFactory(lr_scheduler) if lr_scheduler is not None else None
        stats = (1, -1, 1, 1)
        self.register_buffer("data_mean", torch.tensor(data_mean or [0.0]).view(stats), persistent=False)
        self.register_buffer("data_std", torch.tensor(data_std or [1.0]).view(stats), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        """Features (N, num_features) of images in model space (the data's normalization)."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))

    def from_data_space(self, images: Tensor) -> Tensor:
        """Images in data space (e.g. [0, 1]) to the model space the classifier was trained in."""
        return (images - self.data_mean) / self.data_std

    def _step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=sync, batch_size=len(x))
        self.log(f"{stage}/accuracy", accuracy, prog_bar=stage != "train", sync_dist=sync, batch_size=len(x))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self)
