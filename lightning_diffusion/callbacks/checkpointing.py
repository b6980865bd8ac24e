"""Resuming exactly, and a checkpoint when the job is told to stop."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_diffusion.callbacks.common import run_dir


def rng_states() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch, CUDA of the current device) as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    # The current device only: under DDP rank k draws on device k and every rank loads rank 0's checkpoint; all
    # ranks are seeded and draw alike, so rank 0's device state is what each rank's own device held.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])  # on the current device


class ExactResume(Callback):
    """Saves the global RNG states in every checkpoint and restores them when training resumes from it.

    Lightning restores the weights, optimizer, LR scheduler, EMA and loop counters, but not the random streams,
    so a resumed run would draw another data order and other noise than an uninterrupted one. With this callback,
    2 + 2 epochs give the weights of 4 straight epochs (on the same machine). Nothing between the restore and the
    first training batch draws from the global generators: the evaluation loaders have their own (data.base).
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict["rng"])


class CheckpointOnSignal(Callback):
    """On SIGTERM, saves checkpoints/interrupted.ckpt in the run folder before the run exits.

    Lightning stops every rank together after the current batch when one receives SIGTERM; this callback
    saves a resumable checkpoint at that point (all ranks take part, rank zero writes). Resume with
    ``fit --ckpt_path last``, which picks the newest of last.ckpt and interrupted.ckpt. On SLURM with auto-requeue,
    Lightning itself saves on the requeue signal (SIGUSR1) and resumes from it with ``--ckpt_path hpc``.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            path = run_dir(trainer) / "checkpoints" / "interrupted.ckpt"
            trainer.save_checkpoint(path)
            rank_zero_info(f"SIGTERM: saved {path} at step {trainer.global_step}; resume with --ckpt_path last")


def newest_checkpoint(output_dir: str, experiment: str) -> Optional[Path]:
    """The most recently written last.ckpt or interrupted.ckpt of any run of the experiment (or None)."""
    candidates = [
        path
        for name in ("last.ckpt", "interrupted.ckpt")
        for path in (Path(output_dir) / experiment).glob(f"version_*/checkpoints/{name}")
    ]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)
