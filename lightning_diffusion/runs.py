"""The run-folder layout, in one place: every run writes into <output_dir>/<experiment>/version_N/.

    version_N/config.yaml, metrics.csv, checkpoints/{last.ckpt, best-*.ckpt, interrupted.ckpt}, plots/, samples/

Lightning's CSVLogger numbers the version folders; this module names the experiment, finds the run folder of a
trainer and the newest resumable checkpoint of an experiment, and never lets a file overwrite another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger


def experiment_name(given: str | None, config_files: Sequence[object]) -> str:
    """The experiment is named by the config (`experiment:`), or else by the last config file's name."""
    if given:
        return given
    return Path(str(config_files[-1])).stem if config_files else "default"


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder (outputs/<experiment>/<version>): `trainer.log_dir` without its collective broadcast,
    so rank-zero-only code may call it."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if isinstance(logger, (CSVLogger, TensorBoardLogger)):
        return Path(logger.log_dir)
    return Path(getattr(logger, "save_dir", None) or trainer.default_root_dir)


def free_path(path: Path) -> Path:
    """`path`, or `path` with a -1, -2, ... suffix if it exists: nothing a user has is overwritten."""
    candidate, i = Path(path), 0
    while candidate.exists():
        i += 1
        candidate = Path(path).with_name(f"{Path(path).stem}-{i}{Path(path).suffix}")
    return candidate


def resumable_checkpoints(output_dir: str, experiment: str) -> list[Path]:
    """The experiment's resumable checkpoints, newest first: any run's last.ckpt or interrupted.ckpt, and the
    hpc_ckpt_N.ckpt that Lightning's SLURM requeue saves in <output_dir>/<experiment>."""
    root = Path(output_dir) / experiment
    candidates = [*root.glob("version_*/checkpoints/last.ckpt"), *root.glob("version_*/checkpoints/interrupted.ckpt")]
    candidates += root.glob("hpc_ckpt_*.ckpt")
    existing = [path for path in candidates if path.exists()]  # a last.ckpt link whose target is gone: skipped
    return sorted(existing, key=lambda path: path.stat().st_mtime, reverse=True)


def newest_checkpoint(output_dir: str, experiment: str) -> Path | None:
    """The most recently written resumable checkpoint of the experiment, or None."""
    found = resumable_checkpoints(output_dir, experiment)
    return found[0] if found else None


def checkpoints_in(path: str | Path) -> list[Path]:
    """The checkpoints a path names, newest first: a checkpoint file as given, a run folder's
    checkpoints/last.ckpt, or an experiment folder's resumable ones ([] if none)."""
    path = Path(path)
    if (path / "checkpoints" / "last.ckpt").exists():  # a run folder
        return [path / "checkpoints" / "last.ckpt"]
    if path.is_dir():  # an experiment folder
        return resumable_checkpoints(str(path.parent), path.name)
    return [path] if path.is_file() else []


def checkpoint_in(path: str | Path) -> Path | None:
    """The newest checkpoint that `path` names (see checkpoints_in), or None."""
    found = checkpoints_in(path)
    return found[0] if found else None
