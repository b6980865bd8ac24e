"""The training loss between two logging steps, kept on the device: the host waits once per logging interval, not
once per step, and a non-finite loss is still caught with the step where it first appeared."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor

from lightning_diffusion.checkpoints import newest_saved_checkpoint
from lightning_diffusion.lightning_private import attached_trainer


class LossMonitor:
    """Keeps each step's loss, detached, on the device (no copy, no read) until the host reads them."""

    def __init__(self) -> None:
        self.losses: list[Tensor] = []  # the detached losses since the last read, on the device
        self.steps: list[int] = []  # the global step of each, on the host

    @property
    def count(self) -> int:
        return len(self.steps)

    def update(self, loss: Tensor, step: int) -> None:
        self.losses.append(loss.detach())  # a view that keeps the value, not the graph: no kernel, no sync
        self.steps.append(step)

    def read(self, all_gather: Callable[[Tensor], Tensor]) -> tuple[float, int | None]:
        """The mean loss since the last read over all ranks, and the first step at which any rank's loss was not
        finite (None if none was), with one collective and one host sync; then starts a new interval."""
        if not self.count:
            return float("nan"), None
        losses = torch.stack(self.losses).float()  # one kernel per interval, not one per step
        finite = torch.isfinite(losses)
        first = torch.where(finite.all(), -1, torch.argmin(finite.int()))  # index of the first non-finite loss
        stats = torch.stack([losses.mean(), first.float()]).reshape(1, 2)
        mean, first = all_gather(stats).reshape(-1, 2).T.tolist()  # every rank's (mean, first index)
        bad_steps = [self.steps[int(i)] for i in first if i >= 0]
        self.losses, self.steps = [], []
        return sum(mean) / len(mean), min(bad_steps, default=None)

    def read_finite(self, all_gather: Callable[[Tensor], Tensor], trainer: L.Trainer) -> float:
        """`read`'s mean loss; a non-finite loss stops the fit on every rank, naming the step and the newest
        checkpoint (all saved before that step, when a read comes before every save)."""
        mean, bad_step = self.read(all_gather)
        if bad_step is not None:
            saved = newest_saved_checkpoint(trainer) or "none saved yet"
            raise FloatingPointError(
                f"Non-finite loss at step {bad_step} (epoch {trainer.current_epoch}): training stopped, the newest "
                f"good checkpoint is {saved}; lower the learning rate, clip gradients (trainer.gradient_clip_val) or "
                "prefer bf16-mixed to 16-mixed."
            )
        return mean

    def log_step(self, module: L.LightningModule, loss: Tensor, batch_idx: int, batch_size: int) -> None:
        """Keeps the `loss` of training batch `batch_idx` and, where it reads, logs `train/loss` and sets
        `module.last_train_loss` (a float on the host: callbacks.LossProgressBar shows it); nothing off a trainer.

        The host reads the losses (one sync, one collective) only where Lightning logs (after the optimizer step
        global_step + 1 of this batch, every log_every_n_steps) and on the epoch's last batch, before any
        end-of-epoch checkpoint: a non-finite loss never reaches a saved checkpoint."""
        trainer = attached_trainer(module)
        if trainer is None:
            return
        self.update(loss, trainer.global_step)
        every = trainer.log_every_n_steps
        logging = every > 0 and ((trainer.global_step + 1) % every == 0 or trainer.should_stop)
        if logging or batch_idx + 1 >= trainer.num_training_batches:
            module.last_train_loss = self.read_finite(module.all_gather, trainer)
            module.log("train/loss", module.last_train_loss, batch_size=batch_size)
