"""Reconstruct the EMA of any length from a run's post-hoc EMA snapshots into a checkpoint that every command reads.

    python -m lightning_diffusion posthoc-ema outputs/mnist_cond/version_0 --sigma_rels "[0.05, 0.08, 0.15]"

The run must have trained with the callback `lightning_diffusion.callbacks.PostHocEMA`. The average of relative
standard deviation sigma_rel at a step is the least-squares combination of the snapshots' power-function averages up
to that step (Karras et al. 2024, EDM2, Algorithm 3). Each is written to <run>/posthoc_ema/sigma_rel=<s>-step=<t>.ckpt:
the run's last checkpoint with these weights for its denoiser and no training state (`predict`, `validate`,
`evaluate` and `export` read it; `fit --ckpt_path` does not resume from it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser
from torch import Tensor

from lightning_diffusion.checkpoints import check_checkpoint, checkpoint_named, read_checkpoint
from lightning_diffusion.errors import PROGRAM, check_range, one_line_errors, parse_arguments
from lightning_diffusion.optim import MAX_SIGMA_REL, posthoc_ema_coefficients, sigma_rel_to_gamma
from lightning_diffusion.runs import POSTHOC_EMA, free_path, posthoc_ema_snapshots, save_atomically

COMMAND = f"{PROGRAM} posthoc-ema"
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "current_model_state", "averaging_state")


def snapshots_up_to(run: str | Path, step: int | None) -> dict[int, Path]:
    """The run's snapshots at or before `step` (None: all); one sentence if there are none."""
    snapshots = posthoc_ema_snapshots(run)
    if not snapshots:
        raise ValueError(
            f"{run} has no post-hoc EMA snapshots ({POSTHOC_EMA}/snapshot-step=*.pt): train it with the callback "
            "lightning_diffusion.callbacks.PostHocEMA."
        )
    kept = {s: path for s, path in snapshots.items() if step is None or s <= step}
    if not kept:
        raise ValueError(f"{run} has no post-hoc EMA snapshot at or before step {step}: its first is {min(snapshots)}.")
    return kept


def reconstruct(run: str | Path, sigma_rel: float, step: int | None = None) -> tuple[dict[str, Tensor], int, dict]:
    """The denoiser weights of the power-function EMA of `sigma_rel` at `step` (None: the newest snapshot's), its
    step, and a record of how it was made (the snapshots' steps and sigma_rels and their coefficients). The
    snapshots are read one at a time: memory holds two copies of the weights, whatever their number."""
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel must lie between 0 and 0.28 (gamma > 0), got {sigma_rel}: EDM2 uses 0.05-0.15.")
    snapshots = snapshots_up_to(run, step)
    first = torch.load(next(iter(snapshots.values())), map_location="cpu", weights_only=True)
    sigma_rels, gammas = first["sigma_rels"], first["gammas"]
    step = max(snapshots) if step is None else step
    steps = [s for s in snapshots for _ in gammas]
    coefficients = posthoc_ema_coefficients(steps, gammas * len(snapshots), step, sigma_rel_to_gamma(sigma_rel))
    weights: dict[str, Tensor] = {}
    for k, path in enumerate(snapshots.values()):
        snapshot = first if k == 0 else torch.load(path, map_location="cpu", weights_only=True)
        if snapshot["sigma_rels"] != sigma_rels:
            raise ValueError(f"{path} holds sigma_rels {snapshot['sigma_rels']}, the run's first {sigma_rels}.")
        for j, profile in enumerate(snapshot["profiles"]):
            c = float(coefficients[k * len(gammas) + j])
            for name, value in profile.items():
                if not value.is_floating_point():  # buffers such as counters: the newest snapshot's
                    weights[name] = value
                elif name in weights and weights[name].dtype == torch.float64:
                    weights[name].add_(value.double(), alpha=c)
                else:
                    weights[name] = value.double() * c
    record = {"sigma_rel": sigma_rel, "step": step, "snapshot_steps": steps, "snapshot_sigma_rels": sigma_rels}
    record["coefficients"] = np.asarray(coefficients).tolist()
    return (
        {name: value.float() if value.is_floating_point() else value for name, value in weights.items()},
        step,
        record,
    )


def write_checkpoint(run: str | Path, sigma_rel: float, step: int | None = None) -> Path:
    """<run>/posthoc_ema/sigma_rel=<s>-step=<t>.ckpt: the run's last checkpoint with the reconstructed denoiser
    weights and no training state; an existing file is never overwritten (the new one is numbered)."""
    last = checkpoint_named(run) if Path(run).is_dir() else None
    if last is None:
        raise ValueError(f"{run} is not a run folder with a checkpoint: give outputs/<experiment>/version_N.")
    check_checkpoint(last, "DiffusionModule", needed_by="posthoc-ema needs")
    weights, step, record = reconstruct(run, sigma_rel, step)
    checkpoint = {k: v for k, v in read_checkpoint(last).items() if k not in TRAINING_STATE}
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("denoiser.")}
    checkpoint["state_dict"] = {**state, **{f"denoiser.{name}": value for name, value in weights.items()}}
    checkpoint["global_step"], checkpoint["posthoc_ema"] = step, record
    path = free_path(Path(run) / POSTHOC_EMA / f"sigma_rel={sigma_rel:.3f}-step={step:07d}.ckpt")
    return save_atomically(path, checkpoint)


def posthoc_ema(run: str, sigma_rels: list[float], step: int | None = None) -> list[Path]:
    """Writes one checkpoint per sigma_rel.

    Args:
        run: A run folder (outputs/<experiment>/version_N) trained with callbacks.PostHocEMA.
        sigma_rels: Relative standard deviations of the averages to reconstruct (EDM2's optima lie at 0.05-0.15).
        step: The training step of the averages (default: the newest snapshot's); only snapshots up to it are used.
    """
    check_range("posthoc-ema", "--step", step, 0)
    return [write_checkpoint(run, float(s), step) for s in sigma_rels]


def main(argv: list[str]) -> list[Path]:
    """`python -m lightning_diffusion posthoc-ema RUN --sigma_rels [...]`; an expected error is one line."""
    with one_line_errors(argv, COMMAND):
        parser = ArgumentParser(prog=COMMAND, description=__doc__.strip().splitlines()[0], exit_on_error=False)
        parser.add_argument("run", type=str, help="A run folder trained with callbacks.PostHocEMA.")
        parser.add_function_arguments(posthoc_ema, skip={"run"})
        required = f"posthoc-ema needs a run folder and sigma_rels: {COMMAND} <run> --sigma_rels [0.05, 0.1]."
        args = parse_arguments(parser, argv, COMMAND, required=required)
        paths = posthoc_ema(args.run, args.sigma_rels, args.step)
        for path in paths:
            print(f"Wrote {path}")
        return paths
