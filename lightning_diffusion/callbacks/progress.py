"""The progress bar, showing the training loss without making the host wait for the device."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class LossProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar with the mean training loss of the last logging interval.

    A metric logged with ``prog_bar=True`` is converted to a Python number after every batch, a host sync per
    step on a GPU; the module instead keeps the loss it already read at its logging step (`last_train_loss`, a
    float), and the bar shows that.
    """

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is not None:
            metrics["train/loss"] = f"{loss:.4g}"
        return metrics
