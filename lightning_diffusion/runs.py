"""The run-folder layout, in one place: every run writes into <output_dir>/<experiment>/version_N/.

    version_N/config.yaml, metrics.csv, checkpoints/{last.ckpt, best-*.ckpt, interrupted.ckpt}, plots/, samples/

Lightning's CSVLogger numbers the version folders; this module names the experiment, finds the run folder of a
trainer and the checkpoints a path names, numbers the folders of the tools (eval_N, compare_N) the same way, and
writes every file whole (`write_atomically`, `save_atomically`, `write_folder_atomically`) without overwriting
another (`free_path`).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.figure import Figure


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


def remove_if_unused(folder: Path, root: Path | None = None) -> None:
    """After a failed run: its version folder goes if it holds nothing but its config (config.yaml, Lightning's
    hparams.yaml, empty files or folders), so that no empty run lies among the real ones, and then the experiment
    folder `root` (one the run made) if it is empty; anything else stays."""
    if not folder.is_dir():
        return
    files = [path for path in folder.rglob("*") if path.is_file() or path.is_symlink()]
    disposable = [
        path.name in ("config.yaml", "hparams.yaml") or (path.is_file() and not path.stat().st_size) for path in files
    ]
    if all(disposable):
        shutil.rmtree(folder, ignore_errors=True)
    if root is not None and root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def write_atomically(path: Path, write: Callable[[BinaryIO], Any] | str) -> Path:
    """Writes `path` (its folder made) through `write(file)`, or the text `write`, under a temporary name in the
    same folder (so the move is a rename, never a copy across filesystems), synced to disk and then moved into
    place: a failed or interrupted write leaves the previous file untouched and no temporary behind. An OS error
    names `path` (a full disk's failed write names no file of its own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            if isinstance(write, str):
                file.write(write.encode())
            else:
                write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:
        if error.strerror and error.filename in (None, str(partial)):
            error.filename = str(path)
        raise
    finally:
        partial.unlink(missing_ok=True)
    return path


def save_atomically(path: Path, obj: Any) -> Path:
    """`torch.save(obj)` into `path` through `write_atomically`: the file is the whole archive or the previous one.
    The archive is built in memory first (as Lightning does): torch's zip writer turns a failed write of a file
    into an unnamed RuntimeError, and a full disk must be said as one."""
    archive = io.BytesIO()
    torch.save(obj, archive)
    return write_atomically(path, lambda file: file.write(archive.getbuffer()))


def write_folder_atomically(folder: Path, write: Callable[[Path], Any]) -> Path:
    """Makes `folder` through `write(partial)`, which fills a temporary folder beside it; its files are synced to
    disk and the folder renamed into place (onto nothing or an empty folder): `folder` appears whole or not at all.
    FileExistsError if `folder` holds something (another process made it first)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        write(partial)
        for file in partial.rglob("*"):
            if file.is_file():
                with open(file, "rb") as opened:
                    os.fsync(opened.fileno())
        try:
            os.replace(partial, folder)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise FileExistsError(f"{folder} already exists: choose another folder.") from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Writes `fig` as a PNG (atomically); never overwrites an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists: plots are never overwritten, choose another run folder.")
    return write_atomically(path, lambda file: fig.savefig(file, format="png", dpi=dpi))


def numbered(folder: Path, pattern: str) -> dict[int, Path]:
    """The paths in `folder` named by `pattern` with a number for its `{}` (eval_{} finds eval_0, eval_1, ...),
    by number."""
    name = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
    found = (name.fullmatch(path.name) for path in Path(folder).iterdir()) if Path(folder).is_dir() else ()
    return {int(match.group(1)): Path(folder) / match.group(0) for match in found if match}


def next_numbered(folder: Path, pattern: str, first: int = 0) -> Path:
    """`folder`/`pattern` numbered one above the highest number taken (`first` if none), as Lightning numbers
    version_N: eval_N, compare_N."""
    return Path(folder) / pattern.format(max(numbered(folder, pattern), default=first - 1) + 1)


def claim_numbered(folder: Path, pattern: str) -> Path:
    """`next_numbered(folder, pattern)`, made here: when another process made that folder first the claim moves on to
    the next number, so that runs started at the same moment never share a version folder."""
    while True:
        path = next_numbered(folder, pattern)
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue


def free_path(path: Path) -> Path:
    """`path`, or if it exists `<stem>-N<suffix>` numbered by `next_numbered` from 1: nothing is overwritten."""
    path = Path(path)
    return next_numbered(path.parent, f"{path.stem}-{{}}{path.suffix}", first=1) if path.exists() else path


FIT_RECORD = "metrics_fit.json"  # callbacks.MetricsWriter: {"finished": false} from a fit's start until its end


def fit_finished(run: str | Path) -> bool | None:
    """Whether the fit of a run folder finished (its metrics_fit.json); None for a run that has none (a run of an
    older version, or not a fit)."""
    try:
        return bool(json.loads((Path(run) / FIT_RECORD).read_text())["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


POSTHOC_EMA = "posthoc_ema"  # the run folder's callbacks.PostHocEMA snapshots and their reconstructions


def posthoc_ema_snapshots(run: str | Path) -> dict[int, Path]:
    """The PostHocEMA snapshots of a run folder, <run>/posthoc_ema/snapshot-step=<step>.pt, by step."""
    found = numbered(Path(run) / POSTHOC_EMA, "snapshot-step={}.pt")
    return dict(sorted(found.items()))


def posthoc_ema_snapshot(run: str | Path, step: int) -> Path:
    return Path(run) / POSTHOC_EMA / f"snapshot-step={step:07d}.pt"


def resumable_checkpoints(experiment: Path) -> list[Path]:
    """The resumable checkpoints of an experiment folder, newest first: any run's last.ckpt or interrupted.ckpt,
    and the hpc_ckpt_N.ckpt that Lightning's SLURM requeue saves in the experiment folder."""
    root = Path(experiment)
    candidates = [*root.glob("version_*/checkpoints/last.ckpt"), *root.glob("version_*/checkpoints/interrupted.ckpt")]
    candidates += root.glob("hpc_ckpt_*.ckpt")
    existing = [path for path in candidates if path.exists()]  # a last.ckpt link whose target is gone: skipped
    return sorted(existing, key=lambda path: path.stat().st_mtime, reverse=True)


def checkpoints_in(path: str | Path, every: bool = False) -> list[Path]:
    """The checkpoints a path names: a checkpoint file as given; a run folder's checkpoints/last.ckpt (with `every`,
    each checkpoint of the run once, files before links, by name: a last.ckpt that links to another is left out);
    an experiment folder's resumable ones, newest first ([] if none)."""
    path = Path(path)
    if every and (path / "checkpoints").is_dir():
        unique: dict[Path, Path] = {}
        for checkpoint in sorted((path / "checkpoints").glob("*.ckpt"), key=lambda p: (p.is_symlink(), p.name)):
            unique.setdefault(checkpoint.resolve(), checkpoint)  # a real file's name over a link's
        return list(unique.values())
    if (path / "checkpoints" / "last.ckpt").exists():  # a run folder
        return [path / "checkpoints" / "last.ckpt"]
    if path.is_dir():  # an experiment folder
        return resumable_checkpoints(path)
    return [path] if path.is_file() else []
