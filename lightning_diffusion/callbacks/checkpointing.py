"""Resuming exactly, and a checkpoint when the job is told to stop."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
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
    """On SIGTERM, saves ``checkpoints/interrupted.ckpt`` in the run folder and stops every rank at the same batch.

    Lightning's own SIGTERM handling is replaced while training runs: under DDP it stops each rank on its own
    signal and broadcasts from inside the signal handler, so a signal that reaches the ranks at different moments
    (or only one of them) crashes or deadlocks the job (Lightning issue #20806). Here the handler only takes note;
    after every training batch the ranks agree (one all-reduce) on whether any of them got the signal, and then all
    stop together through Lightning's own stopping points and save the checkpoint together: after that batch, or,
    on an epoch's last batch or during its validation, once the epoch is complete (a checkpoint that resumes
    exactly). A stop inside validation (``val_check_interval < 1``) keeps the training and EMA weights in their
    places. Nothing is saved outside ``fit``. SIGUSR1 (SLURM's ``--signal``) is treated like SIGTERM unless
    Lightning's SLURM auto-requeue handles it (it then saves ``hpc_ckpt_N.ckpt`` and requeues the job itself).
    Resume with ``fit --ckpt_path last``.

    Args:
        signals: Names of the signals that stop training with a checkpoint; one other than SIGTERM that already
            has a handler when training starts (SIGUSR1 under Lightning's SLURM auto-requeue) is left to it.
    """

    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1")) -> None:
        self.signals = tuple(signals)
        self.received: Optional[int] = None  # the signal this process got, until the ranks agree to stop

    def _on_signal(self, signum: int, frame: Any) -> None:
        # No collective and no logging here: a handler runs between any two bytecodes, also inside logging.
        if self.received is None:
            self.received = signum

    def _install(self) -> None:
        """Replaces the handlers that Lightning registered just before the run; Lightning puts back the ones from
        before the run when it tears down."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.signals:
            signum = getattr(signal, name, None)
            if signum is None:  # e.g. SIGUSR1 on Windows
                continue
            # SIGTERM always (its handler is Lightning's now); another signal when nothing else handles it
            if signum == signal.SIGTERM or signal.getsignal(signum) in (None, signal.SIG_DFL, self._on_signal):
                signal.signal(signum, self._on_signal)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install()

    def _agree(self, trainer: L.Trainer) -> bool:
        """Whether any rank got a signal; every rank calls this at the same point, and joins the all-reduce."""
        noted = self.received is not None or trainer.received_sigterm
        return trainer.strategy.reduce_boolean_decision(noted, all=False)

    def _stop(self, trainer: L.Trainer) -> None:
        # Lightning's flag, now set on every rank alike: its loops raise SIGTERMException at their next check
        trainer._signal_connector.received_sigterm = True

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        # Stop after this batch, but never inside the epoch's validation (a resume from there draws one more
        # seed and is not exact): on the last batch the validation runs and the stop comes at the epoch's end.
        if self._agree(trainer) and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._agree(trainer):  # also a signal that came during validation
            self._stop(trainer)  # raised once the epoch is complete: an end-of-epoch checkpoint, resumed exactly

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return  # a SIGTERM in validate/test would leave a "resumable" checkpoint with no training state
        if trainer.validating or trainer.sanity_checking:  # a stop inside validation (val_check_interval < 1)
            # Weight averaging swaps the EMA into the module for validation and back at its end, which now never
            # comes: swap back, so that the checkpoint holds the training weights as training weights.
            for callback in trainer.callbacks:
                if isinstance(callback, WeightAveraging) and callback._average_model is not None:
                    callback._swap_models(pl_module)
        directory = getattr(trainer.checkpoint_callback, "dirpath", None) or run_dir(trainer) / "checkpoints"
        path = Path(directory) / "interrupted.ckpt"
        trainer.save_checkpoint(path)  # a collective: every rank is here, after the same batch
        name = signal.Signals(self.received).name if self.received is not None else "SIGTERM"
        rank_zero_info(f"{name}: saved {path} at step {trainer.global_step}; resume with --ckpt_path last")


def newest_checkpoint(output_dir: str, experiment: str) -> Optional[Path]:
    """The most recently written resumable checkpoint of the experiment (or None): any run's last.ckpt or
    interrupted.ckpt, or the hpc_ckpt_N.ckpt that Lightning's SLURM requeue saves in <output_dir>/<experiment>."""
    root = Path(output_dir) / experiment
    candidates = [*root.glob("version_*/checkpoints/last.ckpt"), *root.glob("version_*/checkpoints/interrupted.ckpt")]
    candidates += root.glob("hpc_ckpt_*.ckpt")
    existing = [path for path in candidates if path.exists()]  # a last.ckpt link whose target is gone: skipped
    return max(existing, key=lambda path: path.stat().st_mtime, default=None)
