"""Resuming exactly: the random states of every rank in the checkpoint."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn


def rng_states() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch, CUDA of the current device) as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    # the current device only: under DDP rank k draws on device k, and each rank restores its own state
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def _portable(states: dict[str, Any]) -> dict[str, Any]:
    """The states as plain Python values (bytes for tensors), which torch.distributed's object collectives carry."""
    kind, keys, pos, has_gauss, cached = states["numpy"]
    plain = {k: bytes(v.numpy()) for k, v in states.items() if isinstance(v, torch.Tensor)}
    return {**plain, "python": states["python"], "numpy": (kind, keys.tolist(), pos, has_gauss, cached)}


def _from_portable(plain: dict[str, Any]) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    states = {k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in plain.items() if isinstance(v, bytes)}
    numpy_keys = torch.from_numpy(np.asarray(keys, dtype=np.uint32))
    return {**states, "python": plain["python"], "numpy": (kind, numpy_keys, pos, has_gauss, cached)}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])  # on the current device


class ExactResume(Callback):
    """Saves every rank's global RNG states in every checkpoint and restores each rank's own on resume.

    Lightning restores the weights, optimizer, LR scheduler, EMA and loop counters, but not the random streams,
    so a resumed run would draw another data order and other noise than an uninterrupted one. With this callback,
    2 + 2 epochs give the weights of 4 straight epochs (on the same machine and number of devices). Under DDP each
    rank draws its own stream (DiffusionModule.setup), so the checkpoint holds one state per rank (gathered when it
    is written: every rank takes part in a save). Nothing between the restore and the first training batch draws
    from the global generators: the evaluation loaders have their own (data.base).
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        states = rng_states()
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1 or not torch.distributed.is_initialized():
            return {"rng": states, "rng_per_rank": [states]}
        gathered: list = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, _portable(states))  # its unpickler takes no tensors
        per_rank = [_from_portable(s) for s in gathered]
        return {"rng": per_rank[0], "rng_per_rank": per_rank}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        per_rank = state_dict.get("rng_per_rank") or [state_dict["rng"]]  # checkpoints before per-rank streams
        trainer = self._trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if len(per_rank) == world_size:
            set_rng_states(per_rank[rank])
        elif rank == 0:
            rank_zero_warn(
                f"The checkpoint holds the random streams of {len(per_rank)} ranks, this run has "
                f"{world_size}: the weights resume exactly, the noise and data order do not."
            )
