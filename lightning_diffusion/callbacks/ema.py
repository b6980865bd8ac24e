"""EMA of the weights (Lightning's own EMAWeightAveraging), in place for everything validation does."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from torch import Tensor


def warmup_ema_fn(decay: float):
    """EMA update with the decay warmed up as min(decay, (1 + n) / (10 + n)) after n updates (the schedule of
    TensorFlow's ExponentialMovingAverage, as in diffusers' EMAModel), so that early averages are not dominated
    by the initial weights."""

    def avg_fn(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        n = num_averaged.item() if isinstance(num_averaged, Tensor) else num_averaged
        d = min(decay, (1 + n) / (10 + n))
        return averaged.lerp(current, 1 - d)  # d * averaged + (1 - d) * current

    return avg_fn


class EMA(EMAWeightAveraging):
    """Lightning's EMAWeightAveraging, with a warmed-up decay and the averaged weights kept until `on_validation_end`.

    Lightning calls the callbacks' `on_validation_epoch_end` before the module's, so the parent would swap the
    training weights back before the module computes its sample metrics and before later callbacks draw samples.
    Swapping back in `on_validation_end` (which runs before ModelCheckpoint's) makes every sample drawn during
    validation come from the EMA weights. Checkpoints hold the EMA weights as their `state_dict`.

    Args:
        decay: EMA decay per update, once warmed up.
        update_every_n_steps: Update the average every this many optimizer steps.
        update_starting_at_step: First optimizer step that updates the average (``None``: the first).
        device: Where the averaged copy lives (``None``: with the model; ``"cpu"`` saves GPU memory).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        device: str | None = None,
    ) -> None:
        # EMAWeightAveraging fixes its own avg_fn; keep its update rules, with the warmed-up average.
        WeightAveraging.__init__(self, device=device, use_buffers=True, avg_fn=warmup_ema_fn(decay))
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # keep the EMA weights in place until on_validation_end

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)  # swap the training weights back
