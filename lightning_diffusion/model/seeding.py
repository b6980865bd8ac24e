"""The random streams of training: one per DDP rank, and a seeded fork for repeatable evaluation noise."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def seed_rank(rank: int, world_size: int) -> None:
    """Each DDP rank its own random stream (timesteps, noise, label dropout, flips), derived from the run's seed and
    the rank, so that a step sees world_size independent draws. Rank 0 keeps the run's own stream, so one device
    draws what it always drew; the data order is DistributedSampler's, which has a generator of its own."""
    seed = os.environ.get("PL_GLOBAL_SEED")  # seed_everything's; without one, every process is seeded apart
    if world_size > 1 and seed is not None and rank > 0:
        rank_seed = (int(seed) + 1_000_003 * rank) % 2**32
        random.seed(rank_seed)
        np.random.seed(rank_seed)
        torch.manual_seed(rank_seed)  # and every CUDA device's generator


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Draws from `seed` on the CPU and on `device`, and leaves their random streams as they were (the training's,
    so that a run that validates resumes exactly)."""
    accelerator = [device] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=accelerator, device_type=device.type if accelerator else None):
        torch.default_generator.manual_seed(seed)
        if accelerator:
            torch.get_device_module(device).manual_seed(seed)  # the current device, which Lightning makes `device`
        yield
