"""Sample quality over a grid of checkpoints x samplers x steps x guidance (scale, interval, guide) x post-hoc EMA
length, one command, resumable.

    python -m lightning_diffusion evaluate --runs "[outputs/moons/version_0]" \\
        --samplers "[DDPMScheduler, DPMSolverMultistepScheduler]" --steps "[10, 20]" --num_samples 2000

Every cell generates --num_samples samples --num_seeds times (seeds --seed, --seed + 1, ...) and reports each metric
as the mean and standard deviation over them, beside its floor: 2D SWD and MMD as `validate` computes them, images
the offline classifier's metrics (--classifier) and FID/KID when the Inception weights file is present. A row per
cell is appended to <experiment>/eval_N/results.csv as soon as the cell is done; the same command again finds that
folder (its config.yaml) and runs only the missing cells. Once the grid is complete: results.json, results.md and
the curves quality_vs_nfe.png, quality_vs_guidance.png and quality_vs_step.png (each where its axis varies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from tqdm import tqdm

from lightning_diffusion.checkpoints import check_checkpoint, read_checkpoint
from lightning_diffusion.errors import PROGRAM, one_line_errors, parse_arguments
from lightning_diffusion.metrics.features import INCEPTION_PATH
from lightning_diffusion.model.guidance import check_interval
from lightning_diffusion.model.module import DiffusionModule
from lightning_diffusion.tools.eval_folders import checkpoints_of, claim, eval_folder, warn_unfinished
from lightning_diffusion.tools.grid import (
    cell_key,
    cell_row,
    check_cells,
    check_ema_lengths,
    generation_labels,
    grid_cells,
    load_weights,
    score_samples,
)
from lightning_diffusion.tools.report import (
    AXES,
    CELL_COLUMNS,
    append_row,
    locked,
    log_to_wandb,
    metric_columns,
    read_rows,
    results_table,
    write_summaries,
)
from lightning_diffusion.tools.scoring import IMAGE_BATCH, Scorers, run_config, run_folder

COMMAND = f"{PROGRAM} evaluate"


@dataclass
class Options:
    """The grid and how to run it; `--config options.yaml` gives them as a YAML file, the command line overrides it.

    Args:
        runs: Run folders (their last checkpoint, or every checkpoint with --all_checkpoints), experiment folders
            (their newest checkpoint) or .ckpt files.
        all_checkpoints: Every checkpoint of each run folder, not only the last.
        samples: samples.npz files written by `predict`, each scored as it is (one cell; its sampler, steps and
            guidance as the file records them).
        samplers: Samplers of the grid (default: each checkpoint's own).
        steps: num_inference_steps of the grid (default: each checkpoint's).
        guidance: Guidance scales of the grid (default: each checkpoint's).
        cells: SAMPLER:STEPS pairs instead of the samplers x steps product (e.g. [DDPMScheduler:1000,
            DDIMScheduler:50]), each with every guidance scale.
        guidance_intervals: Guidance intervals [sigma_lo, sigma_hi] of the grid, in the formulation's noise level
            (null: guidance at every noise level; default: each checkpoint's).
        guides: Guide checkpoints of the grid, for autoguidance (null: the unconditional model; default: each
            checkpoint's).
        ema_lengths: Post-hoc EMA lengths sigma_rel of the grid, reconstructed from each run's PostHocEMA snapshots
            at the checkpoint's step (null: the checkpoint's own weights).
        num_samples: Samples generated per cell and seed.
        seed: Seed of the first resampling (as the model's sample_seed in `validate`).
        num_seeds: Resamplings per cell (seeds seed, seed + 1, ...): the spread.
        batch_size: Samples generated (and scored) at a time (default: the checkpoint's sample_batch_size; else all
            at once for 2D, 250 for images).
        reference: The real samples scored against: held_out (the split of `test`; its images after the first n
            give the floor), train, or a folder of images or a samples.npz.
        classifier: Images: an ImageClassifier checkpoint, run or experiment folder, for classifier_fd, _kid and
            _accuracy.
        inception_weights: Images: FID and KID when this Inception weights file exists (null: never).
        device: Where to sample: cpu, cuda, ... (auto: cuda if available).
        output_dir: Write to <output_dir>/<experiment>/eval_N (default: eval_N beside the first run's version
            folders).
        experiment: The experiment folder of the evaluation under output_dir (default: the first run's
            experiment), e.g. exp_002 for a grid over several experiments.
        resume: Continue the newest eval_N of the same options, skipping its finished cells (false: always a new
            eval_N).
        progress: Progress bars over the cells and the samples.
        wandb_project: Also log the table and plots to this W&B project (online with credentials, else offline
            into the eval folder).
    """

    runs: list[str] = field(default_factory=list)
    all_checkpoints: bool = False
    samples: list[str] = field(default_factory=list)
    samplers: list[str] | None = None
    steps: list[int] | None = None
    guidance: list[float] | None = None
    cells: list[str] | None = None
    guidance_intervals: list[tuple[float, float] | None] | None = None
    guides: list[str | None] | None = None
    ema_lengths: list[float | None] | None = None
    num_samples: int = 2000
    seed: int = 0
    num_seeds: int = 3
    batch_size: int | None = None
    reference: str = "held_out"
    classifier: str | None = None
    inception_weights: str | None = INCEPTION_PATH
    device: str = "auto"
    output_dir: str | None = None
    experiment: str | None = None
    resume: bool = True
    progress: bool = True
    wandb_project: str | None = None

    def __post_init__(self) -> None:
        if not self.runs and not self.samples:
            raise ValueError(
                "Nothing to evaluate: give --runs (run folders or checkpoints) or --samples (samples.npz)."
            )
        if self.reference not in ("held_out", "train") and not Path(self.reference).exists():
            raise ValueError(
                f"--reference {self.reference} is neither held_out, train, nor an existing .npz or image folder."
            )
        for name, least, values in (
            ("steps", 1, self.steps),
            ("num_samples", 2, [self.num_samples]),
            ("num_seeds", 1, [self.num_seeds]),
            ("batch_size", 1, [self.batch_size or 1]),
        ):
            if values and min(values) < least:
                raise ValueError(f"--{name} must be at least {least}, got {min(values)}.")
        if self.guidance and min(self.guidance) < 0:
            raise ValueError(f"--guidance scales must be at least 0, got {min(self.guidance)}.")
        for interval in self.guidance_intervals or []:
            check_interval(interval)


def grid_axes(options: Options) -> tuple[list | None, list | None, list | None]:
    """The values of the grid's guidance-interval, guide and EMA-length axes (None where not given)."""
    return options.guidance_intervals, options.guides, options.ema_lengths


def cell_of(row: dict[str, Any]) -> tuple:
    return cell_key(*(row.get(k) for k in ("checkpoint", "step", "sampler", "steps", "guidance", *AXES)))


def evaluate(options: Options, command: str = "") -> Path:
    """Runs the grid that `options` describe; returns the eval folder."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if options.device == "auto" else options.device
    )
    checkpoints = [c for run in options.runs for c in checkpoints_of(run, options.all_checkpoints)]
    warn_unfinished(checkpoints)
    kinds = {
        len(check_checkpoint(c, "DiffusionModule", needed_by="evaluate needs").get("sample_shape") or (2,))
        for c in checkpoints
    }
    if len(kinds) > 1:
        raise ValueError("--runs mixes 2D and image checkpoints, whose metrics differ: evaluate each kind on its own.")
    infos: dict[tuple[str, int], tuple[Path, dict, int]] = {}
    for checkpoint in checkpoints:  # a run's checkpoints of one step hold one model (best and last of an epoch)
        step = int(read_checkpoint(checkpoint).get("global_step", 0))
        infos.setdefault((str(run_folder(checkpoint)), step), (checkpoint, run_config(checkpoint), step))
    samples = [Path(path) for path in options.samples]
    first = checkpoints[0] if checkpoints else samples[0]
    experiment = options.experiment or run_config(first).get("experiment") or run_folder(first).parent.name
    folder = eval_folder(options, first, experiment)
    results = folder / "results.csv"
    columns, rows = read_rows(results)
    axes = [name for name, given in zip(AXES, grid_axes(options), strict=True) if given]
    done = {cell_of(r) for r in rows}
    seeds = [options.seed + k for k in range(options.num_seeds)]
    scorers = Scorers(options, device)
    grid = [options.cells] if options.cells else [options.samplers, options.steps]
    per_model = math.prod(len(values or [0]) for values in (*grid, options.guidance, *grid_axes(options)))
    cells_bar = tqdm(total=per_model * len(infos) + len(samples), desc="cells", disable=not options.progress)

    def record(row: dict[str, Any], names: list[str]) -> None:
        nonlocal columns, folder, results
        if not folder.is_dir():  # the first row: the folder is made, or shared with an evaluation of these options
            folder = claim(folder, options)
            results = folder / "results.csv"
        columns = (
            read_rows(results)[0]
            or columns
            or [*CELL_COLUMNS[:7], *axes, *CELL_COLUMNS[7:], *metric_columns(names), "seconds"]
        )
        row = {k: v for k, v in row.items() if k not in AXES or k in axes}
        if set(row) - set(columns):
            raise ValueError(
                f"{row['run']} gives metrics ({', '.join(sorted(set(row) - set(columns)))}) that "
                f"{results} has no column for: evaluate conditional and unconditional runs apart."
            )
        if append_row(results, columns, row, same=lambda other: cell_of(other) == cell_of(row)):
            rows.append(row)  # else another evaluation of this grid scored the cell first
        cells_bar.update(1)

    try:
        for _, (checkpoint, config, step) in sorted(infos.items()):
            model = DiffusionModule.load_from_checkpoint(checkpoint, map_location="cpu").to(device).eval()
            cells = grid_cells(
                model, options.samplers, options.steps, options.guidance, options.cells, *grid_axes(options)
            )
            run = f"{run_folder(checkpoint).parent.name}/{run_folder(checkpoint).name}"
            todo = [c for c in cells if cell_key(checkpoint, step, *c) not in done]
            cells_bar.update(len(cells) - len(todo))
            if not todo:
                continue
            scorer = scorers.get(config, model.sample_shape, options.num_samples, model.num_classes)
            labels = generation_labels(model, scorer.labels, options.num_samples)
            check_cells(model, todo, labels)
            batch_size = (
                options.batch_size
                or model.hparams.get("sample_batch_size")
                or (IMAGE_BATCH if len(model.sample_shape) > 1 else None)
            )
            own, loaded = {k: v.clone() for k, v in model.denoiser.state_dict().items()}, None
            check_ema_lengths(run_folder(checkpoint), step, todo)
            for cell in sorted(todo, key=lambda c: (c.ema is not None, c.ema or 0.0)):  # each EMA length once
                if cell.ema != loaded:
                    load_weights(model, own, run_folder(checkpoint), step, cell.ema)
                    loaded = cell.ema
                cells_bar.set_postfix_str(f"{run} step {step}: {', '.join(map(str, cell))}")
                with tqdm(
                    total=options.num_samples * len(seeds), desc="samples", leave=False, disable=not options.progress
                ) as bar:
                    row, names = cell_row(model, scorer, cell, labels, options.num_samples, seeds, batch_size, bar)
                record({"checkpoint": str(checkpoint), "run": run, "step": step, **row}, names)
        for path in samples:
            if any(str(r["checkpoint"]) == str(path) for r in rows):
                cells_bar.update(1)
                continue
            record(*score_samples(scorers, path, options.batch_size or IMAGE_BATCH))
    finally:  # an error's sentence starts on a line of its own
        cells_bar.close()
    with locked(results):  # every row, also those another evaluation of this grid wrote; summaries written once
        return finish(options, folder, experiment, *read_rows(results), command)


def finish(options: Options, folder: Path, experiment: str, columns: list[str], rows: list[dict], command: str) -> Path:
    """Once every cell is in results.csv: the summaries (written once; a complete rerun leaves them) and W&B."""
    print(results_table(columns, rows))
    if (folder / "results.md").exists():
        print(f"All {len(rows)} cells were already in {folder / 'results.csv'}.")
        return folder
    details = (
        f"{options.num_samples} samples per cell, mean ± standard deviation over {options.num_seeds} seeds from "
        f"{options.seed}; reference: {options.reference}; NFE = network evaluations per sample (a guided step "
        "is 2: the model and the unconditional model or the guide; outside the guidance interval 1)."
    )
    meta = {"experiment": experiment, "command": command, "details": details, "columns": columns}
    plots = write_summaries(folder, columns, rows, meta)
    if options.wandb_project:
        log_to_wandb(options.wandb_project, folder, experiment, columns, rows, plots)
    print(f"Wrote {folder}: results.csv, results.json, results.md" + "".join(f", {p.name}" for p in plots))
    return folder


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file of these options.")
    parser.add_class_arguments(Options)
    return parser


def main(argv: list[str]) -> Path:
    """`python -m lightning_diffusion evaluate ...`; an expected error ends as one line `error: ...`."""
    with one_line_errors(argv, COMMAND):
        values = parse_arguments(make_parser(), argv, COMMAND).as_dict()
        values.pop("config", None)
        return evaluate(Options(**values), " ".join([COMMAND, *argv]))
