"""The training's state beside the weights: the loss between two logging steps, kept on the device (the host waits
once per logging interval, not once per step, and a non-finite loss is still caught with the step where it first
appeared), and each DDP rank's own random stream."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


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

    def read(self, all_gather: Callable[[Tensor], Tensor], epoch: int, checkpoints: list[Path]) -> float:
        """The mean loss since the last read over all ranks, with one collective and one host sync; then starts a new
        interval. A non-finite loss on any rank raises on every rank alike, naming the step and the newest checkpoint
        in the `checkpoints` folders (all saved before that step: a read comes before every checkpoint)."""
        if not self.count:
            return float("nan")
        losses = torch.stack(self.losses).float()  # one kernel per interval, not one per step
        finite = torch.isfinite(losses)
        first = torch.where(finite.all(), -1, torch.argmin(finite.int()))  # index of the first non-finite loss
        stats = torch.stack([losses.mean(), first.float()]).reshape(1, 2)
        mean, first = all_gather(stats).reshape(-1, 2).T.tolist()  # every rank's (mean, first index)
        steps = [self.steps[int(i)] for i in first if i >= 0]
        self.losses, self.steps = [], []
        if steps:
            saved = sorted(
                {p for folder in checkpoints for p in folder.glob("*.ckpt")}, key=lambda p: p.stat().st_mtime
            )
            raise FloatingPointError(
                f"Non-finite loss at step {min(steps)} (epoch {epoch}): training stopped, the newest good checkpoint "
                f"is {saved[-1] if saved else 'none saved yet'}; lower the learning rate, clip gradients "
                "(trainer.gradient_clip_val) or prefer bf16-mixed to 16-mixed."
            )
        return sum(mean) / len(mean)


def seed_rank_streams(world_size: int, rank: int) -> None:
    """Each DDP rank its own random stream (timesteps, noise, label dropout, flips): derived from the run's seed
    and the rank, so that a step sees world_size independent draws. Rank 0 keeps the run's own stream, so one
    device draws what it always drew; the data order is DistributedSampler's, which has a generator of its own."""
    seed = os.environ.get("PL_GLOBAL_SEED")  # seed_everything's; without one, every process is seeded apart
    if world_size > 1 and seed is not None and rank > 0:
        rank_seed = (int(seed) + 1_000_003 * rank) % 2**32
        random.seed(rank_seed)
        np.random.seed(rank_seed)
        torch.manual_seed(rank_seed)  # and every CUDA device's generator
