"""EMA of the weights: torch's AveragedModel, updated by torch's multi-tensor EMA with a warm-up of the decay."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lightning_diffusion.errors import check_range


def warmup_decay(decay: float, num_updates: int) -> float:
    """The decay of the update after `num_updates` earlier ones, min(decay, (1 + n) / (10 + n)): the schedule of
    TensorFlow's ExponentialMovingAverage, as in diffusers' EMAModel, so that early averages are not dominated by
    the initial weights."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EMA(Callback):
    """An exponential moving average of the weights, swapped in for everything validation does.

    The average is a `torch.optim.swa_utils.AveragedModel` of the module; each update moves all its floating-point
    parameters and buffers at once (`get_ema_multi_avg_fn`, one fused lerp) by the decay `warmup_decay` of the
    update count, which is kept on the host, so the training step never waits for the device (AveragedModel's own
    `update_parameters` reads its device-side count). The first update copies the weights. The averaged weights are
    in the module from `on_validation_epoch_start` to `on_validation_end`: the module's sample metrics, which run in
    its `on_validation_epoch_end` after the callbacks', and every callback's samples come from them. Until the first
    update (`update_starting_at_step`), validation, plots and checkpoints use the training weights, and say so once.
    Checkpoints hold the EMA weights as their `state_dict` and the training weights beside them (the layout of
    Lightning's `WeightAveraging`); training ends with the EMA weights in the module.

    Args:
        decay: EMA decay per update, once warmed up.
        update_every_n_steps: Update the average every this many optimizer steps.
        update_starting_at_step: First optimizer step that updates the average (``None``: the first).
        device: Where the averaged copy lives (``None``: with the model; ``"cpu"`` saves GPU memory, at the price
            of copying the weights to the host, and waiting for them, at every update).
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        device: str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0 or update_every_n_steps < 1:
            raise ValueError(
                f"EMA needs 0 <= decay < 1 and update_every_n_steps >= 1, got {decay} and {update_every_n_steps}."
            )
        check_range("EMA", "update_starting_at_step", update_starting_at_step, 0)
        self.decay, self.update_every_n_steps = decay, update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.device = torch.device(device) if device is not None else None
        self.average: AveragedModel | None = None  # made when fit begins
        self.num_updates = 0  # on the host: the decay never reads the device
        self.latest_update_step = 0  # the optimizer steps taken at the last update
        self.swapped = False  # whether the module holds the averaged weights now (inside validation)
        self._said_not_yet = False
        self._pairs: tuple | None = None  # (averaged, current, other pairs, elsewhere): see _tensors

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # pl_module.device is already the device it will train on
            self.average = AveragedModel(pl_module, device=self.device or pl_module.device, use_buffers=True)
            self.num_updates = self.latest_update_step = 0
            self._pairs = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pairs = None  # listed again once the model is on its device and restored

    def should_update(self, step_idx: int) -> bool:
        """Whether the optimizer step `step_idx` (zero-based) updates the average."""
        started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
        return started and step_idx % self.update_every_n_steps == 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        # global_step counts the optimizer steps: a batch that only accumulated gradients does not update
        if trainer.global_step > self.latest_update_step and self.should_update(trainer.global_step - 1):
            self.update(pl_module)
            self.latest_update_step = trainer.global_step

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule) -> None:
        """averaged <- d * averaged + (1 - d) * current with d = warmup_decay, for all floating-point parameters and
        buffers at once (the first update copies); other buffers are copied."""
        averaged, current, others, elsewhere = self._tensors(pl_module)
        if elsewhere:  # the average lives on another device (EMA(device="cpu")): a blocking copy, read at once
            current = [c.to(a.device) for a, c in zip(averaged, current, strict=True)]
        if self.num_updates == 0:  # the first update copies
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)
        elif averaged:
            get_ema_multi_avg_fn(warmup_decay(self.decay, self.num_updates))(averaged, current, None)
        for a, c in others:
            a.copy_(c)
        self.average.n_averaged.add_(1)  # AveragedModel's own count, for its state_dict; never read here
        self.num_updates += 1

    def _tensors(self, pl_module: L.LightningModule) -> tuple[list[Tensor], list[Tensor], list, bool]:
        """The averaged and the current floating-point parameters and buffers, the pairs of the others, and whether
        the two models lie on different devices: listed at the first update of a fit rather than at every step
        (walking the modules costs more than the update of a small model). Parameters and buffers keep their
        identity when the model moves or loads a checkpoint (their data is replaced or copied into)."""
        if self._pairs is None:
            pairs = list(
                zip(
                    [*self.average.module.parameters(), *self.average.module.buffers()],
                    [*pl_module.parameters(), *pl_module.buffers()],
                    strict=True,
                )
            )
            floats = [(a, c) for a, c in pairs if a.is_floating_point()]
            others = [(a, c) for a, c in pairs if not a.is_floating_point()]
            elsewhere = any(a.device != c.device for a, c in pairs)
            self._pairs = ([a for a, _ in floats], [c for _, c in floats], others, elsewhere)
        return self._pairs

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is None:
            return
        if self.num_updates:
            self.swap(pl_module)
        elif not self._said_not_yet and not trainer.sanity_checking:  # the sanity check comes before any step
            first = self.update_starting_at_step or 0
            rank_zero_info(
                f"EMA: no update yet (the first comes after step {first}): validation uses the "
                "training weights until then."
            )
            self._said_not_yet = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.swapped:
            self.swap(pl_module)  # the training weights back

    @torch.no_grad()
    def swap(self, pl_module: L.LightningModule) -> None:
        """Exchange the averaged and the training weights of `pl_module` (also to put the training weights back
        when a stop comes inside validation)."""
        averaged = [*self.average.module.parameters(), *self.average.module.buffers()]
        current = [*pl_module.parameters(), *pl_module.buffers()]
        for a, c in zip(averaged, current, strict=True):  # copies queued on the device: no sync
            held = a.detach().clone()
            a.detach().copy_(c.detach())
            c.detach().copy_(held)
        self.swapped = not self.swapped

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.num_updates:  # the trained weights stay if no average was ever taken
            with torch.no_grad():
                averaged = [*self.average.module.parameters(), *self.average.module.buffers()]
                for a, c in zip(averaged, [*pl_module.parameters(), *pl_module.buffers()], strict=True):
                    c.detach().copy_(a.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self.latest_update_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.latest_update_step = state_dict["latest_update_step"]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.average is None or not self.num_updates:  # no average yet: the training weights are the state_dict
            return
        state = self.average.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
        checkpoint["averaging_state"] = {k: v for k, v in state.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Outside fit the state_dict, the EMA weights, is the model; a checkpoint saved before the first update
        # holds no average (the first update copies the weights).
        if self.average is None or "current_model_state" not in checkpoint:
            return
        averaged = {f"module.{k}": v for k, v in checkpoint["state_dict"].items()}
        self.average.load_state_dict(averaged | checkpoint["averaging_state"])
        pl_module.load_state_dict(checkpoint["current_model_state"])  # Lightning loaded the EMA weights into it
        self.num_updates = int(self.average.n_averaged)  # once, at the restore
