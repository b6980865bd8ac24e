"""Which checkpoints an evaluation reads, and which eval_N folder holds its grid: the one of the same options (to
resume), else a new one, claimed whole (with its config.yaml) so that evaluations started at once never share one
unless their options are the same."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from lightning_diffusion.checkpoints import checkpoint_named
from lightning_diffusion.runs import (
    FIT_RECORD,
    checkpoints_in,
    fit_finished,
    next_numbered,
    numbered,
    write_atomically,
    write_folder_atomically,
)
from lightning_diffusion.tools.scoring import run_folder

NOT_IDENTITY = ("config", "progress", "resume", "wandb_project")  # options that do not change a cell's numbers


def identity(options: dict[str, Any]) -> dict[str, Any]:
    """The options that decide the cells' numbers (an unset one, None, is absent from a saved config.yaml), with
    tuples as the lists that config.yaml reads back."""
    return {k: json.loads(json.dumps(v)) for k, v in (options or {}).items() if k not in NOT_IDENTITY and v is not None}


def same_options(folder: Path, options: Any) -> bool:
    saved = folder / "config.yaml"
    return saved.is_file() and identity(yaml.safe_load(saved.read_text())) == identity(asdict(options))


def checkpoints_of(run: str, every: bool) -> list[Path]:
    """The checkpoints that --runs names: with `every`, each of a run folder's; else the one it names."""
    if every and (Path(run) / "checkpoints").is_dir():
        found = checkpoints_in(run, every=True)
    else:
        found = [checkpoint for checkpoint in [checkpoint_named(run)] if checkpoint is not None]
    if not found:
        raise ValueError(
            f"{run} holds no checkpoint: give a run folder (outputs/<experiment>/version_N), an "
            "experiment folder or a .ckpt file."
        )
    return found


def warn_unfinished(checkpoints: list[Path]) -> None:
    """One warning per run whose fit did not finish (killed, or stopped by a signal): its checkpoints are evaluated
    as they are, at their step."""
    for run in dict.fromkeys(run_folder(checkpoint) for checkpoint in checkpoints):
        if fit_finished(run) is False:
            print(
                f"warning: the fit of {run} did not finish (its {FIT_RECORD} says so: killed or stopped): its "
                "checkpoints are scored at the step they reached; resume it with --ckpt_path last to finish it.",
                file=sys.stderr,
            )


def eval_folder(options: Any, first: Path, experiment: str) -> Path:
    """The newest eval_N of the same options (when resuming), else the next number; `claim` makes it."""
    named = options.output_dir or options.experiment
    root = Path(options.output_dir or "outputs") / experiment if named else run_folder(first).parent
    folders = numbered(root, "eval_{}")
    for n in sorted(folders, reverse=True) if options.resume else []:
        if same_options(folders[n], options):
            return folders[n]
    return next_numbered(root, "eval_{}")


def claim(folder: Path, options: Any) -> Path:
    """`folder` made whole with config.yaml (the options) when its first row is written, so an error before any
    cell leaves no folder; if another evaluation made it first, the folder is shared when its options are the same,
    else the next number is claimed."""
    text = yaml.safe_dump(asdict(options), sort_keys=False)
    while True:
        if folder.is_dir() and same_options(folder, options):
            return folder
        try:
            return write_folder_atomically(folder, lambda partial: write_atomically(partial / "config.yaml", text))
        except FileExistsError:
            if same_options(folder, options):
                return folder
            folder = next_numbered(folder.parent, "eval_{}")
