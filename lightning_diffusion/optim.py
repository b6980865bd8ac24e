"""The optimizer and learning-rate scheduler of any LightningModule of the framework, given as CLI callables, and the
power-function EMA of the weights (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", EDM2: sec. 3.1 and appendix C), whose post-hoc reconstruction is the least-squares fit of their Algorithm 3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
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


# ---------------------------------------------------------------- power-function EMA (EDM2)
# A power-function EMA of exponent gamma at step t weighs the weights of step s <= t by the density
# (gamma + 1) s^gamma / t^(gamma + 1) (their eq. 121); its width relative to t is sigma_rel (eq. 123).


MAX_SIGMA_REL = 0.28  # below gamma_to_sigma_rel(0) = 0.2887: the profiles need gamma > 0


def gamma_to_sigma_rel(gamma: float) -> float:
    """sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))) (eq. 123)."""
    return float(np.sqrt((gamma + 1) / (gamma + 2) ** 2 / (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of relative standard deviation `sigma_rel`: the largest real root of
    gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + 12 - sigma_rel^-2 (eq. 126, Algorithm 2)."""
    t = float(sigma_rel) ** -2
    return float(np.roots([1, 7, 16 - t, 12 - t]).real.max())


def power_ema_beta(gamma: float, step: int) -> float:
    """The decay of the update after optimizer step `step` (1, 2, ...): (1 - 1/step)^(gamma + 1) (eq. 127 with
    time counted in steps). After step T the average weighs step s by (s/T)^(gamma+1) - ((s-1)/T)^(gamma+1), the
    density above integrated over (s - 1, s]."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def profile_inner_products(t_a: np.ndarray, gamma_a: np.ndarray, t_b: np.ndarray, gamma_b: np.ndarray) -> np.ndarray:
    """<p_a, p_b> of the profiles of the averages at steps t_a and t_b (broadcast) with exponents gamma_a and gamma_b
    (eq. 151, Algorithm 3): (a + 1)(b + 1) / ((a + b + 1) max(t_a, t_b)) (min / max)^(the later one's exponent)."""
    later_b = t_a < t_b
    ratio = np.where(later_b, t_a / t_b, t_b / t_a)
    exponent = np.where(later_b, gamma_b, gamma_a)
    return (gamma_a + 1) * (gamma_b + 1) * ratio**exponent / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b))


def posthoc_ema_coefficients(steps: Sequence[int], gammas: Sequence[float], step: int, gamma: float) -> np.ndarray:
    """The weights x of the stored averages (at `steps`, exponents `gammas`) whose sum best approximates, in L2
    over the training time, the power-function EMA of exponent `gamma` at `step`: A x = b with A their profiles'
    inner products and b theirs with the target (Algorithm 3), normalised to sum to 1."""
    t, g = np.float64(steps).reshape(-1, 1), np.float64(gammas).reshape(-1, 1)
    a = profile_inner_products(t, g, t.T, g.T)
    b = profile_inner_products(t, g, np.float64(step), np.float64(gamma))
    x = np.linalg.solve(a, b).ravel()
    return x / x.sum()
