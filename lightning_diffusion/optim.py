"""The optimizer and learning-rate scheduler of any LightningModule of the framework, given as CLI callables."""

from __future__ import annotations

from typing import Any

import lightning as L

from lightning_diffusion.lightning_private import refuses_clipping


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
    trainer = module._trainer
    if trainer is not None and refuses_clipping(trainer, optimizer):  # Lightning would raise at the first step
        raise ValueError(
            f"trainer.gradient_clip_val {trainer.gradient_clip_val} in {trainer.precision}: Lightning cannot clip the "
            f"gradients of a fused {type(optimizer).__name__} in mixed precision; set the optimizer's fused: false, "
            "or drop gradient_clip_val."
        )
    if module.lr_scheduler_fn is None:
        return optimizer
    scheduler = module.lr_scheduler_fn(optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": module.hparams.lr_scheduler_interval}}
