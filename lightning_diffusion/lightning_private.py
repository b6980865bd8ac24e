"""Every use of a private Lightning API, in one place; `check()` fails in one sentence when Lightning changes one.

pyproject.toml pins lightning below the next minor release; tests/test_lightning_private.py calls `check()`, so
that a Lightning upgrade that moves one of these fails there, naming it, rather than deep inside a run.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.precision import amp


def stop_all_ranks(trainer: L.Trainer) -> None:
    """Lightning's SIGTERM flag, set on this rank: its loops raise SIGTERMException at their next check (the
    public `trainer.should_stop` would run validation and checkpoints first, and a stop inside validation could
    not be resumed exactly)."""
    trainer._signal_connector.received_sigterm = True


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes step metrics to the loggers after this training batch (its `log_every_n_steps`
    condition, on the batches that stepped the optimizer)."""
    return trainer._logger_connector.should_update_logs


def is_last_batch(trainer: L.Trainer) -> bool:
    """Whether the training batch in progress is the epoch's last."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def refuses_clipping(trainer: L.Trainer, optimizer: Any) -> bool:
    """Whether Lightning would raise at the first optimizer step because it cannot clip this optimizer's gradients:
    gradient clipping in mixed precision (16 or bf16) of an optimizer that unscales its gradients itself (a fused
    one), Lightning's `MixedPrecision.clip_gradients` condition."""
    return (
        (trainer.gradient_clip_val or 0) > 0
        and isinstance(trainer.precision_plugin, amp.MixedPrecision)
        and amp._optimizer_handles_unscaling(optimizer)
    )


# LightningCLI._parse_ckpt_path is overridden by cli.DiffusionCLI (the command line keeps the call options).
_USED = {  # name -> whether a bare Trainer and the classes still have it
    "Trainer._signal_connector.received_sigterm": lambda t: hasattr(t._signal_connector, "received_sigterm"),
    "Trainer._logger_connector.should_update_logs": lambda t: hasattr(type(t._logger_connector), "should_update_logs"),
    "_FitLoop.epoch_loop.batch_progress.is_last_batch": lambda t: hasattr(
        t.fit_loop.epoch_loop.batch_progress, "is_last_batch"
    ),
    "LightningCLI._parse_ckpt_path": lambda t: callable(getattr(LightningCLI, "_parse_ckpt_path", None)),
    "amp._optimizer_handles_unscaling": lambda t: callable(getattr(amp, "_optimizer_handles_unscaling", None)),
}


def check() -> None:
    """Raise one sentence naming each private Lightning API that the installed Lightning no longer has."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    missing = [name for name, present in _USED.items() if not present(trainer)]
    if missing:
        raise RuntimeError(
            f"lightning {L.__version__} no longer has {', '.join(missing)}, which lightning_diffusion relies on: "
            "install the lightning version pyproject.toml allows, or update lightning_diffusion/lightning_private.py."
        )
