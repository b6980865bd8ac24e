"""The one checkpoint reader: what a .ckpt holds, checked in one sentence before anything is built from it; and
the one writer, `AtomicCheckpointIO`, through which every checkpoint appears whole or not at all."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_diffusion.runs import checkpoints_in, resumable_checkpoints, save_atomically


class CheckpointError(ValueError):
    """A checkpoint that cannot serve the command: the message is the one sentence the user sees."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO`, with a local checkpoint written under a temporary name in its destination
    folder, flushed, fsynced and renamed into place (`runs.save_atomically`), so that a full disk, a crash or a kill
    during the write leaves the previous file (or none) under the final name, never a partial one. Lightning's own
    writer stages a local file in the system's temporary folder and moves it, a copy that can stop halfway when that
    folder is on another filesystem. Remote paths (s3://, gs://, ...) keep fsspec's transactional upload."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomically(Path(path), checkpoint)


def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """The Trainer's `plugins` (None, one or a list) with an AtomicCheckpointIO, unless they hold a CheckpointIO."""
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins] if plugins is not None else []
    return plugins if any(isinstance(p, CheckpointIO) for p in plugins) else [*plugins, AtomicCheckpointIO()]


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive (Lightning always does)


def read_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint's dictionary (tensors memory-mapped, so reading the hyperparameters is cheap); one sentence
    if the file is missing, empty, not a checkpoint, damaged, or (with `weights_only`) holds Python objects."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: give a .ckpt file in it (e.g. {path}/checkpoints/last.ckpt).")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: give a .ckpt file of a run (or --ckpt_path last).")
    with open(path, "rb") as file:
        head = file.read(4)
    if head != _ZIP_MAGIC:
        what = "empty" if not head else "not a PyTorch zip archive"
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({what}: truncated or not a .ckpt): give a .ckpt file of a run."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except pickle.UnpicklingError as error:
        if weights_only and "weights only" in str(error).lower():
            raise CheckpointError(
                f"{path} holds Python objects that a safe load refuses ({_cause(error)}): if you trust the file, "
                "pass --weights_only false."
            ) from error
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged: {_cause(error)}).") from error
    except Exception as error:  # noqa: BLE001 - zip and storage errors all mean the same to a user
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or damaged: {_cause(error)}): give another .ckpt of "
            "the run (or --ckpt_path last)."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict): give a .ckpt of a run.")
    return checkpoint


def _cause(error: BaseException) -> str:
    """The first clause of a library's message: torch's zip errors go on about miniz internals."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". ")[0].rstrip(".")[:160]


def first_readable(candidates: Iterable[Path]) -> Path | None:
    """The first readable checkpoint of `candidates` (newest first), each unreadable one before it skipped with a
    warning that names it, or None."""
    for path in candidates:
        try:
            read_checkpoint(path)
        except CheckpointError as error:
            rank_zero_warn(f"skipped: {str(error).split(': give ')[0].rstrip('.')}.")  # the remedy is the skip
            continue
        return path
    return None


def last_checkpoint(output_dir: str, experiment: str) -> Path:
    """`--ckpt_path last`: the experiment's newest readable resumable checkpoint, printed; newer unreadable ones are
    skipped with a warning each (nothing is deleted)."""
    found = resumable_checkpoints(Path(output_dir) / experiment)
    if not found:
        raise CheckpointError(
            f"--ckpt_path last found no last.ckpt or interrupted.ckpt under {Path(output_dir) / experiment}"
            "/version_*/checkpoints: give a checkpoint path (or the experiment and --output_dir of the run)."
        )
    chosen = first_readable(found)
    if chosen is None:
        raise CheckpointError(
            f"--ckpt_path last found {len(found)} checkpoints under {Path(output_dir) / experiment}, none readable "
            "(see the warnings above): give a checkpoint path."
        )
    rank_zero_info(f"--ckpt_path last: {chosen}")
    return chosen


def newest_saved_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest checkpoint file that this fit's ModelCheckpoint callbacks saved, or the one it resumed from."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            paths += [callback.last_model_path, callback.best_model_path, *callback.best_k_models]
    files = [Path(path) for path in [*paths, trainer.ckpt_path] if path and Path(path).is_file()]
    return max(files, key=lambda path: path.stat().st_mtime, default=None)  # a tie: last.ckpt, listed first


def checkpoint_named(path: str | Path) -> Path | None:
    """The checkpoint that `path` names (runs.checkpoints_in): a file or a run folder's last.ckpt as it is, of an
    experiment folder the newest readable one (see `first_readable`); None if it names none."""
    candidates = checkpoints_in(path)
    return first_readable(candidates) if len(candidates) > 1 else next(iter(candidates), None)


def drop_built_objects(hparams: dict[str, Any]) -> None:
    """Keep in `hparams` only what a config can rebuild: objects built in Python (a denoiser, a scheduler, metric
    instances) are not hyperparameters (the weights are in the state_dict); such a checkpoint loads with
    load_from_checkpoint(path, denoiser=..., scheduler=...) (or formulation=...)."""
    for name in ("denoiser", "scheduler", "formulation", "optimizer", "lr_scheduler"):
        if not isinstance(hparams.get(name), (dict, type(None))):
            hparams.pop(name)
    if not all(isinstance(metric, dict) for metric in hparams.get("sample_metrics") or []):
        hparams.pop("sample_metrics")


# Class paths of older checkpoints, before the package had its subpackages: old module -> today's
MOVED_CLASSES = {
    "lightning_diffusion.module.DiffusionModule": "lightning_diffusion.DiffusionModule",
    "lightning_diffusion.classifier.ImageClassifier": "lightning_diffusion.ImageClassifier",
    "lightning_diffusion.evaluation.InceptionMetrics": "lightning_diffusion.metrics.InceptionMetrics",
    "lightning_diffusion.evaluation.ClassifierMetrics": "lightning_diffusion.metrics.ClassifierMetrics",
}


def _moved(value: Any) -> Any:
    """`value` with every class path of MOVED_CLASSES in it replaced, through nested dicts and lists."""
    if isinstance(value, dict):
        return {key: _moved(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_moved(item) for item in value]
    return MOVED_CLASSES.get(value, value) if isinstance(value, str) else value


def upgrade_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters of older checkpoints in today's form: class paths of modules that moved (MOVED_CLASSES);
    the denoiser was built by the CLI with the data's `sample_shape` and `num_classes` among its arguments, now
    the model calls it with them (a factory)."""
    hparams = _moved(hparams)
    denoiser = hparams.get("denoiser")
    if isinstance(denoiser, dict) and isinstance(denoiser.get("init_args"), dict):
        init_args = {k: v for k, v in denoiser["init_args"].items() if k not in ("sample_shape", "num_classes")}
        hparams = {**hparams, "denoiser": {**denoiser, "init_args": init_args}}
    return hparams


def model_class_name(hparams: dict[str, Any]) -> str:
    """The LightningModule class a checkpoint was saved from (CLI checkpoints record it; else told by its keys)."""
    if "_class_path" in hparams:
        return str(hparams["_class_path"]).rsplit(".", 1)[-1]
    if {"denoiser", "scheduler", "prediction_type", "formulation"} & set(hparams):
        return "DiffusionModule"
    return "ImageClassifier" if "num_features" in hparams else "LightningModule of another kind"


def _a(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def check_checkpoint(
    path: str | Path,
    expected: str,
    sample_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    needed_by: str = "this config builds",
    weights_only: bool = True,
) -> dict[str, Any]:
    """The checkpoint's upgraded hyperparameters, after checking it holds an `expected` model trained on data of
    this `sample_shape` and `num_classes` (where given); one sentence naming the difference otherwise."""
    hparams = upgrade_hparams(read_checkpoint(path, weights_only).get("hyper_parameters") or {})
    held = model_class_name(hparams)
    if held != expected:
        raise CheckpointError(
            f"{path} holds {_a(held)}; {needed_by} {_a(expected)}: give a checkpoint of {_a(expected)} run."
        )
    trained_shape = hparams.get("sample_shape")
    if sample_shape is not None and trained_shape is not None and tuple(trained_shape) != tuple(sample_shape):
        raise CheckpointError(
            f"{path} was trained on {tuple(trained_shape)} samples; this config makes {tuple(sample_shape)}: "
            "use the config the checkpoint was trained with (its run folder's config.yaml)."
        )
    if sample_shape is not None and "num_classes" in hparams and hparams["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path} was trained with num_classes={hparams['num_classes']}; this config has {num_classes}: "
            "use the config the checkpoint was trained with (its run folder's config.yaml)."
        )
    return hparams
