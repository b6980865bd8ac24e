"""Every use of a private Lightning API, in one place; `check()` fails in one sentence when Lightning changes one.

pyproject.toml pins lightning below the next minor release; tests/test_structure.py calls `check()`, so that a
Lightning upgrade that moves one of these fails there, naming it, rather than deep inside a run.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher


def stop_all_ranks(trainer: L.Trainer) -> None:
    """Lightning's SIGTERM flag, set on this rank: its loops raise SIGTERMException at their next check (the
    public `trainer.should_stop` would run validation and checkpoints first, and a stop inside validation could
    not be resumed exactly)."""
    trainer._signal_connector.received_sigterm = True


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer `module` is attached to, or None outside a fit (the public `module.trainer` raises there)."""
    return module._trainer


def child_processes(trainer: L.Trainer) -> list[subprocess.Popen]:
    """The processes of the ranks that this process launched (Lightning's subprocess launcher: ranks 1, 2, ... of this
    node, on local rank 0), or []."""
    return list(getattr(trainer.strategy.launcher, "procs", None) or [])


def set_collective_timeout(trainer: L.Trainer, seconds: float) -> None:
    """The process group's timeout for every collective (DDP and the strategies built on it take `timeout` in their
    constructors only); set before the fit sets the process group up."""
    if hasattr(trainer.strategy, "_timeout"):
        trainer.strategy._timeout = timedelta(seconds=seconds)


# LightningCLI._parse_ckpt_path is overridden by cli.DiffusionCLI (the command line keeps the call options).
_USED = {  # name -> whether a bare Trainer and the classes still have it
    "Trainer._signal_connector.received_sigterm": lambda t: hasattr(t._signal_connector, "received_sigterm"),
    "LightningModule._trainer": lambda t: hasattr(L.LightningModule(), "_trainer"),
    "LightningCLI._parse_ckpt_path": lambda t: callable(getattr(LightningCLI, "_parse_ckpt_path", None)),
    "DDPStrategy._timeout": lambda t: hasattr(DDPStrategy(), "_timeout"),
    "_SubprocessScriptLauncher.procs": lambda t: hasattr(_SubprocessScriptLauncher(None, 2, 1), "procs"),
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
