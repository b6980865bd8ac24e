"""The optimizer and learning-rate scheduler of any LightningModule of the framework, given as CLI callables."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_diffusion.lightning_private import attached_trainer


class SharedFactory:
    """An optimizer or LR-scheduler factory that deep copies of the module (EMA's averaged copy) share: the
    partials jsonargparse builds reference the CLI itself, and under DDP its locks, which cannot be copied."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> SharedFactory:
        return self


IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")  # how an optimizer computes, not what


def keep_implementation(optimizer: torch.optim.Optimizer) -> None:
    """Resuming loads the checkpoint's param groups whole, `fused` and `foreach` too: a run saved unfused would go
    on unfused under a `fused: true` config (and, in 16-mixed, fail at its first step, the GradScaler expecting a
    fused step). After any `load_state_dict`, the groups take back the implementation they were built with."""
    built = [{key: group[key] for key in IMPLEMENTATION if key in group} for group in optimizer.param_groups]

    def restore(optimizer: torch.optim.Optimizer) -> None:
        for group, flags in zip(optimizer.param_groups, built, strict=False):
            group.update(flags)

    optimizer.register_load_state_dict_post_hook(restore)


def refuses_clipping(trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> bool:
    """Whether Lightning would raise at the first optimizer step because it cannot clip this optimizer's gradients:
    gradient clipping in mixed precision (16 or bf16) of a fused optimizer, which unscales its gradients itself
    (Lightning's `MixedPrecision.clip_gradients` condition for torch's optimizers)."""
    return (
        (trainer.gradient_clip_val or 0) > 0
        and isinstance(trainer.precision_plugin, MixedPrecision)
        and bool(optimizer.defaults.get("fused"))
    )


def configure_optimizers(module: L.LightningModule) -> Any:
    """The optimizer of `module.optimizer_fn` and, if any, the LR scheduler of `module.lr_scheduler_fn`, stepped
    every `lr_scheduler_interval` (a hyperparameter)."""
    optimizer = module.optimizer_fn(module.parameters())
    trainer = attached_trainer(module)
    if trainer is not None and refuses_clipping(trainer, optimizer):  # Lightning would raise at the first step
        raise ValueError(
            f"trainer.gradient_clip_val {trainer.gradient_clip_val} in {trainer.precision}: Lightning cannot clip the "
            f"gradients of a fused {type(optimizer).__name__} in mixed precision; set the optimizer's fused: false, "
            "or drop gradient_clip_val."
        )
    keep_implementation(optimizer)
    if module.lr_scheduler_fn is None:
        return optimizer
    scheduler = module.lr_scheduler_fn(optimizer)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": module.hparams.lr_scheduler_interval},
    }
