"""The optimizer and learning-rate scheduler of any LightningModule of the framework, given as CLI callables."""

from __future__ import annotations

from typing import Any

import lightning as L


class SharedFactory:
    """An optimizer or LR-scheduler factory that deep copies of the module (EMA's averaged copy) share: the
    partials jsonargparse builds reference the CLI itself, and under DDP its locks, which cannot be copied."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> "SharedFactory":
        return self


def configure_optimizers(module: L.LightningModule) -> Any:
    """The optimizer of `module.optimizer_fn` and, if any, the LR scheduler of `module.lr_scheduler_fn`, stepped
    every `lr_scheduler_interval` (a hyperparameter)."""
    optimizer = module.optimizer_fn(module.parameters())
    if module.lr_scheduler_fn is None:
        return optimizer
    scheduler = module.lr_scheduler_fn(optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": module.hparams.lr_scheduler_interval}}
