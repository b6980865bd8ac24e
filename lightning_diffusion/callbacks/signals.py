"""A checkpoint when the job is told to stop (SIGTERM, Ctrl-C, SIGUSR1), every rank at the same batch."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_diffusion.callbacks.ema import EMA
from lightning_diffusion.lightning_private import stop_all_ranks
from lightning_diffusion.runs import run_dir


class CheckpointOnSignal(Callback):
    """On SIGTERM or Ctrl-C, saves ``checkpoints/interrupted.ckpt`` in the run folder and stops every rank at the
    same batch; during ``predict``, stops it with nothing written.

    Lightning's own SIGTERM handling is replaced while training runs: under DDP it stops each rank on its own
    signal and broadcasts from inside the signal handler, so a signal that reaches the ranks at different moments
    (or only one of them) crashes or deadlocks the job (Lightning issue #20806). Here the handler only takes note;
    at every logging step (``log_every_n_steps``) and at the end of each epoch the ranks agree (one all-reduce, the
    only cost of this callback) on whether any of them got the signal, and then all stop together through
    Lightning's own stopping points and save the checkpoint together: after that batch, or, on an epoch's last
    batch or during its validation, once the epoch is complete (a checkpoint that resumes exactly). A stop inside
    validation (``val_check_interval < 1``) keeps the training and EMA weights in their places. Nothing is saved
    outside ``fit``. SIGUSR1 (SLURM's ``--signal``) is treated like SIGTERM unless Lightning's SLURM auto-requeue
    handles it (it then saves ``hpc_ckpt_N.ckpt`` and requeues the job itself).
    Ctrl-C (SIGINT) is treated like SIGTERM too, where Lightning would stop at once without a checkpoint; a second
    Ctrl-C before the checkpoint is saved aborts at once (KeyboardInterrupt), without one. Resume with
    ``fit --ckpt_path last``. During ``predict`` the ranks agree after every batch (where each rank has one) and
    stop before the samples are written; a signal during the last batches or the writing stops it at its end.
    The stop's exception carries its signal (``signum``), so that the CLI exits 128 + it (SIGUSR1 as SIGTERM).

    Args:
        signals: Names of the signals that stop with a checkpoint; one other than SIGTERM that already has a
            handler when training starts (SIGUSR1 under Lightning's SLURM auto-requeue, a SIGINT that is ignored,
            as in a background job) is left to it.
    """

    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGINT", "SIGUSR1")) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None  # the signal this process got, until the ranks agree to stop
        self.stopped_by: str | None = None  # the signal whose checkpoint was saved
        self._predicted, self._shared_batches = 0, 0.0  # predict batches done; those every rank has
        self._logging_batch = False  # whether Lightning logs after the training batch in progress

    def _on_signal(self, signum: int, frame: Any) -> None:
        # No collective and no logging here: a handler runs between any two bytecodes, also inside logging.
        if self.received is None:
            self.received = signum
        elif signum == signal.SIGINT and self.stopped_by is None:  # Ctrl-C while the stop is on its way: abort
            first = "a second Ctrl-C" if self.received == signal.SIGINT else f"Ctrl-C after {self._name()}"
            raise KeyboardInterrupt(f"aborted by {first}")

    def _name(self) -> str:
        # without a signal of its own, the stop came from Lightning's SIGTERM flag (a signal before _install)
        return signal.Signals(self.received).name if self.received is not None else "SIGTERM"

    def _install(self) -> None:
        """Replaces the handlers that Lightning registered just before the run; Lightning puts back the ones from
        before the run when it tears down."""
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.signals:
            signum = getattr(signal, name, None)
            if signum is None:  # e.g. SIGUSR1 on Windows
                continue
            # SIGTERM always (its handler is Lightning's now); another signal when nothing else handles it (for
            # SIGINT: Python's own handler, which raises KeyboardInterrupt)
            free = (None, signal.SIG_DFL, signal.default_int_handler, self._on_signal)
            if signum == signal.SIGTERM or signal.getsignal(signum) in free:
                signal.signal(signum, self._on_signal)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = self.stopped_by = None

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
        stop_all_ranks(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Lightning logs after the batches whose optimizer step (global_step + 1, not taken yet) is a multiple of
        # log_every_n_steps
        every = trainer.log_every_n_steps
        self._logging_batch = every > 0 and (trainer.global_step + 1) % every == 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Stop after this batch, but never inside the epoch's validation (a resume from there draws one more
        # seed and is not exact): on the last batch the validation runs and the stop comes at the epoch's end.
        logging = self._logging_batch or (trainer.log_every_n_steps > 0 and trainer.should_stop)
        last = batch_idx + 1 >= trainer.num_training_batches
        if logging and not last and self._agree(trainer):
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
                if isinstance(callback, EMA) and callback.swapped:
                    callback.swap(pl_module)
        directory = getattr(trainer.checkpoint_callback, "dirpath", None) or run_dir(trainer) / "checkpoints"
        path = Path(directory) / "interrupted.ckpt"
        trainer.save_checkpoint(path)  # a collective: every rank is here, after the same batch
        exception.signum = self.received or signal.SIGTERM  # the CLI's exit code
        self.stopped_by = self._name()
        rank_zero_info(f"{self.stopped_by}: saved {path} at step {trainer.global_step}; resume with --ckpt_path last")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = self.stopped_by = None
        self._install()
        # Each rank predicts its own share of the requests, and the shares can differ by a batch: the ranks agree
        # after the batches that every rank has, and once more at the end.
        self._predicted, self._shared_batches = 0, float(sum(trainer.num_predict_batches))
        if trainer.world_size > 1:
            batches = torch.tensor(self._shared_batches, device=trainer.strategy.root_device)
            self._shared_batches = float(trainer.strategy.reduce(batches, reduce_op="min"))

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._predicted += 1
        if self._predicted <= self._shared_batches and self._agree(trainer):
            total = sum(trainer.num_predict_batches)
            self._stop_predict(f"after batch {self._predicted} of {total}, before writing its samples")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._agree(trainer):  # a signal during the last batches or the writing, which is complete
            self._stop_predict("at its end, with its samples written")

    def _stop_predict(self, when: str) -> None:
        rank_zero_info(f"{self._name()}: predict stopped {when}")
        stop = SIGTERMException()  # as Lightning's loops stop on SIGTERM
        stop.signum = self.received or signal.SIGTERM
        raise stop
