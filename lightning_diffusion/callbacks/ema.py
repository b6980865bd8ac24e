"""EMA of the weights (Lightning's weight averaging), updated in one fused pass, in place for all of validation."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.utilities import rank_zero_info

from lightning_diffusion.lightning_private import averaged_model


def warmup_decay(decay: float, num_updates: int) -> float:
    """The decay of the update after `num_updates` earlier ones, min(decay, (1 + n) / (10 + n)): the schedule of
    TensorFlow's ExponentialMovingAverage, as in diffusers' EMAModel, so that early averages are not dominated by
    the initial weights."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EMA(WeightAveraging):
    """An exponential moving average of the weights, swapped in for everything validation does.

    Each update is one fused pass over all parameters and buffers (`torch._foreach_lerp_`) with the decay computed
    from a count kept on the host, so the training step never waits for the device (Lightning's AveragedModel
    reads its device-side count twice per update and calls the average once per parameter). Lightning calls the
    callbacks' `on_validation_epoch_end` before the module's, so the averaged weights stay in place until
    `on_validation_end`: the module's sample metrics and every callback's samples come from them. Until the first
    update (`update_starting_at_step`), validation, plots and checkpoints use the training weights, and say so
    once. Checkpoints hold the EMA weights as their `state_dict` and the training weights beside them.

    Args:
        decay: EMA decay per update, once warmed up.
        update_every_n_steps: Update the average every this many optimizer steps.
        update_starting_at_step: First optimizer step that updates the average (``None``: the first).
        device: Where the averaged copy lives (``None``: with the model; ``"cpu"`` saves GPU memory, at the price
            of a copy of the weights to the host at every update).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__(device=device, use_buffers=True)
        if not 0.0 <= decay < 1.0 or update_every_n_steps < 1:
            raise ValueError(
                f"EMA needs 0 <= decay < 1 and update_every_n_steps >= 1, got {decay} and {update_every_n_steps}."
            )
        self.decay, self.update_every_n_steps = decay, update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.num_updates = 0  # on the host: the decay never reads the device
        self._swapped = False
        self._said_not_yet = False
        self._pairs: tuple | None = None  # (key, averaged, current, other pairs, elsewhere): see _tensors

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._pairs = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pairs = None  # listed again once the model is on its device and restored

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:
            return False
        started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
        return started and step_idx % self.update_every_n_steps == 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self.update(pl_module)
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule) -> None:
        """averaged <- decay' * averaged + (1 - decay') * current, for all floating-point parameters and buffers at
        once (the first update copies); other buffers are copied."""
        model = averaged_model(self)
        averaged, current, others, elsewhere = self._tensors(model, pl_module)
        if elsewhere:  # the average lives on another device (EMA(device="cpu")): copies queued, no sync
            current = [c.to(a.device, non_blocking=True) for a, c in zip(averaged, current, strict=False)]
        if self.num_updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1.0 - warmup_decay(self.decay, self.num_updates))
        for a, c in others:
            a.copy_(c)
        model.n_averaged.add_(1)  # AveragedModel's own count, kept right for its state_dict, never read here
        self.num_updates += 1

    def _tensors(self, model: Any, pl_module: L.LightningModule) -> tuple[list, list, list, bool]:
        """The averaged and the current floating-point parameters and buffers, the pairs of the others, and whether
        the two models lie on different devices: listed at the first update of a fit rather than at every step
        (walking the modules costs more than the update of a small model). Parameters and buffers keep their
        identity when the model moves or loads a checkpoint (their data is replaced or copied into)."""
        key = (id(model), id(pl_module))
        if self._pairs is None or self._pairs[0] != key:
            pairs = list(
                zip(
                    [*model.module.parameters(), *model.module.buffers()],
                    [*pl_module.parameters(), *pl_module.buffers()],
                    strict=False,
                )
            )
            floats = [(a, c) for a, c in pairs if a.is_floating_point()]
            others = [(a, c) for a, c in pairs if not a.is_floating_point()]
            elsewhere = any(a.device != c.device for a, c in pairs)
            self._pairs = (key, [a for a, _ in floats], [c for _, c in floats], others, elsewhere)
        return self._pairs[1:]

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        model = averaged_model(self)
        if model is not None:
            self.num_updates = int(model.n_averaged)  # once, at the restore

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.num_updates or averaged_model(self) is None:  # before the first update there is no average to save
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if averaged_model(self) is None:
            return
        if not self.num_updates:
            if not self._said_not_yet and not trainer.sanity_checking:  # the sanity check comes before any step
                first = self.update_starting_at_step or 0
                rank_zero_info(
                    f"EMA: no update yet (the first comes after step {first}): validation uses the "
                    "training weights until then."
                )
                self._said_not_yet = True
            return
        self.swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # keep the EMA weights in place until on_validation_end

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._swapped:
            self.swap(pl_module)  # the training weights back

    def swap(self, pl_module: L.LightningModule) -> None:
        """Exchange the averaged and the training weights of `pl_module` (also to put the training weights back
        when a stop comes inside validation)."""
        model = averaged_model(self)
        averaged = [*model.module.parameters(), *model.module.buffers()]
        current = [*pl_module.parameters(), *pl_module.buffers()]
        for a, c in zip(averaged, current, strict=False):  # copies queued on the device: no sync
            held = a.detach().clone()
            a.detach().copy_(c.detach())
            c.detach().copy_(held)
        self._swapped = not self._swapped

    @property
    def swapped(self) -> bool:
        """Whether the module holds the averaged weights now (inside validation)."""
        return self._swapped

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.num_updates:  # the trained weights stay if no average was ever taken
            super().on_train_end(trainer, pl_module)
