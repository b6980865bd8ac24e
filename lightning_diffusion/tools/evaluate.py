"""Sample quality over a grid of checkpoints x samplers x steps x guidance, one command, resumable.

    python -m lightning_diffusion.tools.evaluate --runs outputs/moons/version_0 \\
        --samplers DDPMScheduler DPMSolverMultistepScheduler --steps 10 20 --guidance 1.0 --num_samples 2000

Every cell generates --num_samples samples --num_seeds times (seeds --seed, --seed + 1, ...) and reports each metric
as the mean and standard deviation over them, beside its floor: 2D SWD and MMD as `validate` computes them, images
the offline classifier's metrics (--classifier) and FID/KID when the Inception weights file is present. A row per
cell is appended to <experiment>/eval_N/results.csv as soon as the cell is done; the same command again finds that
folder (its config.yaml) and runs only the missing cells. Once the grid is complete: results.json, results.md and
the curves quality_vs_nfe.png, quality_vs_guidance.png and quality_vs_step.png (each where its axis varies).
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from tqdm import tqdm

from lightning_diffusion.checkpoints import check_checkpoint, read_checkpoint
from lightning_diffusion.errors import PROGRAM, one_line_errors, parse_arguments
from lightning_diffusion.metrics.features import INCEPTION_PATH
from lightning_diffusion.model.module import DiffusionModule
from lightning_diffusion.runs import checkpoints_in
from lightning_diffusion.tools.grid import Cell, cell_row, generation_labels
from lightning_diffusion.tools.report import (
    CELL_COLUMNS,
    append_row,
    log_to_wandb,
    markdown_table,
    metric_columns,
    read_rows,
    write_summaries,
)
from lightning_diffusion.tools.scoring import IMAGE_BATCH, SampleArrays, Scorers, build_data, run_config, run_folder

NOT_IDENTITY = ("config", "progress", "resume", "wandb_project")  # options that do not change a cell's numbers


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=f"{PROGRAM}.tools.evaluate", description=__doc__.splitlines()[0], exit_on_error=False)
    add = parser.add_argument
    add("--config", action=ActionConfigFile, help="A YAML file of these options; the command line overrides it.")
    add(
        "--runs",
        type=str,
        nargs="+",
        default=[],
        help="Run folders (their last checkpoint, or every checkpoint with "
        "--all_checkpoints), experiment folders (their newest checkpoint) or .ckpt files.",
    )
    add("--all_checkpoints", type=bool, default=False, help="Every checkpoint of each run folder, not only the last.")
    add(
        "--samples",
        type=str,
        nargs="+",
        default=[],
        help="samples.npz files written by `predict`, each scored as it "
        "is (one cell; its sampler, steps and guidance as the file records them).",
    )
    add("--samplers", type=str, nargs="+", default=None, help="Samplers of the grid (default: each checkpoint's own).")
    add(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        help="num_inference_steps of the grid (default: each checkpoint's).",
    )
    add(
        "--guidance",
        type=float,
        nargs="+",
        default=None,
        help="Guidance scales of the grid (default: each checkpoint's).",
    )
    add(
        "--cells",
        type=str,
        nargs="+",
        default=None,
        help="SAMPLER:STEPS pairs instead of the --samplers x --steps "
        "product (e.g. DDPMScheduler:1000 DDIMScheduler:50), each with every --guidance.",
    )
    add("--num_samples", type=int, default=2000, help="Samples generated per cell and seed.")
    add("--seed", type=int, default=0, help="Seed of the first resampling (as the model's sample_seed in `validate`).")
    add("--num_seeds", type=int, default=3, help="Resamplings per cell (seeds seed, seed + 1, ...): the spread.")
    add(
        "--batch_size",
        type=Optional[int],
        default=None,
        help="Samples generated (and scored) at a time (default: "
        "the checkpoint's sample_batch_size; else all at once for 2D, 250 for images).",
    )
    add(
        "--reference",
        type=str,
        default="held_out",
        help="The real samples scored against: held_out (the split of "
        "`test`; its images after the first n give the floor), train, or a folder of images or a samples.npz.",
    )
    add(
        "--classifier",
        type=Optional[str],
        default=None,
        help="Images: an ImageClassifier checkpoint, run or experiment folder, for classifier_fd, _kid and _accuracy.",
    )
    add(
        "--inception_weights",
        type=Optional[str],
        default=INCEPTION_PATH,
        help="Images: FID and KID when this Inception weights file exists (null: never).",
    )
    add("--device", type=str, default="auto", help="Where to sample: cpu, cuda, ... (auto: cuda if available).")
    add(
        "--output_dir",
        type=Optional[str],
        default=None,
        help="Write to <output_dir>/<experiment>/eval_N (default: eval_N beside the first run's version folders).",
    )
    add(
        "--experiment",
        type=Optional[str],
        default=None,
        help="The experiment folder of the evaluation, under "
        "--output_dir (default: the first run's experiment), e.g. exp_002 for a grid over several experiments.",
    )
    add(
        "--resume",
        type=bool,
        default=True,
        help="Continue the newest eval_N of the same options, skipping its "
        "finished cells (false: always a new eval_N).",
    )
    add("--progress", type=bool, default=True, help="Progress bars over the cells and the samples.")
    add(
        "--wandb_project",
        type=Optional[str],
        default=None,
        help="Also log the table and plots to this W&B "
        "project (online with credentials, else offline into the eval folder).",
    )
    return parser


def _check(args: Namespace) -> None:
    if not args.runs and not args.samples:
        raise ValueError("Nothing to evaluate: give --runs (run folders or checkpoints) or --samples (samples.npz).")
    if args.reference not in ("held_out", "train") and not Path(args.reference).exists():
        raise ValueError(
            f"--reference {args.reference} is neither held_out, train, nor an existing .npz or image folder."
        )
    for name, values in (
        ("steps", args.steps),
        ("num_samples", [args.num_samples]),
        ("num_seeds", [args.num_seeds]),
        ("batch_size", [args.batch_size or 1]),
    ):
        if values and min(values) < (2 if name == "num_samples" else 1):
            raise ValueError(f"--{name} must be at least {2 if name == 'num_samples' else 1}, got {min(values)}.")


def checkpoints_of(run: str, every: bool) -> list[Path]:
    """The checkpoints that --runs names: a file, a run folder's last (or every one, deduplicated, last.ckpt being a
    link to one of them), an experiment folder's newest."""
    path = Path(run)
    every = every and (path / "checkpoints").is_dir()  # a run folder's; a file or an experiment folder gives one
    found = sorted((path / "checkpoints").glob("*.ckpt")) if every else checkpoints_in(path)[:1]
    unique: dict[Path, Path] = {}
    for checkpoint in sorted(found, key=lambda p: p.is_symlink()):  # a real file's name over a link's
        unique.setdefault(checkpoint.resolve(), checkpoint)
    if not unique:
        raise ValueError(
            f"{run} holds no checkpoint: give a run folder (outputs/<experiment>/version_N), an "
            "experiment folder or a .ckpt file."
        )
    return list(unique.values())


def eval_folder(args: Namespace, parser: ArgumentParser, first: Path, experiment: str) -> Path:
    """The newest eval_N of the same options (when resuming), else the next free one, made (with config.yaml, the
    options) when its first row is written: an error before any cell leaves no folder."""
    named = args.output_dir or args.experiment
    root = Path(args.output_dir or "outputs") / experiment if named else run_folder(first).parent
    identity = lambda options: {k: v for k, v in (options or {}).items() if k not in NOT_IDENTITY}  # noqa: E731
    mine = identity(yaml.safe_load(parser.dump(args)))
    numbered = {int(p.name[5:]): p for p in root.glob("eval_*") if p.name[5:].isdigit()}
    for n in sorted(numbered, reverse=True) if args.resume else []:
        saved = numbered[n] / "config.yaml"
        if saved.is_file() and identity(yaml.safe_load(saved.read_text())) == mine:
            return numbered[n]
    return root / f"eval_{max(numbered, default=-1) + 1}"


def sampler_steps(args: Namespace, model: DiffusionModule) -> list[tuple[str, int]]:
    """The (sampler, steps) of the grid: the --cells pairs, or the --samplers x --steps product."""
    if args.cells:
        pairs = [cell.rpartition(":") for cell in args.cells]
        if not all(name and steps.isdigit() and int(steps) > 0 for name, _, steps in pairs):
            raise ValueError(f"--cells takes SAMPLER:STEPS pairs such as DDIMScheduler:50, got {' '.join(args.cells)}.")
        return [(name, int(steps)) for name, _, steps in pairs]
    # the model's own choices: the config's, or its formulation's defaults where the config left them null
    return list(itertools.product(args.samplers or [model.sampler_name], args.steps or [model.num_inference_steps]))


def model_cells(args: Namespace, model: DiffusionModule) -> list[Cell]:
    guidance = args.guidance or [float(model.hparams.guidance_scale)]
    if not model.num_classes and any(g != 1.0 for g in guidance):
        raise ValueError(
            f"--guidance {' '.join(map(str, guidance))} needs a conditional model; this one has no "
            "classes: leave --guidance out (or give 1.0)."
        )
    return [Cell(sampler, steps, g) for (sampler, steps), g in itertools.product(sampler_steps(args, model), guidance)]


def check_cells(model: DiffusionModule, cells: list[Cell], labels: Any | None) -> None:
    """One sample per sampler and guidance with the fewest steps: a sampler or option the model refuses is one
    sentence before the grid's long work."""
    fewest = min(cell.steps for cell in cells)
    for sampler, guidance in sorted({(cell.sampler, cell.guidance) for cell in cells}):
        model.sample(
            1,
            sampler=sampler,
            num_inference_steps=fewest,
            guidance_scale=guidance,
            class_labels=None if labels is None else labels[:1],
            generator=torch.Generator().manual_seed(0),
        )


def cell_key(checkpoint: Any, step: Any, sampler: Any, steps: Any, guidance: Any) -> tuple:
    """What identifies a cell in results.csv (a moved last.ckpt has another step, so it is evaluated again)."""
    return str(checkpoint), step, str(sampler), steps, None if guidance is None else float(guidance)


def evaluate(args: Namespace, parser: ArgumentParser | None = None, command: str = "") -> Path:
    """Runs the grid that `args` (make_parser's options) describes; returns the eval folder."""
    _check(args)
    parser = parser or make_parser()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    checkpoints = [c for run in args.runs for c in checkpoints_of(run, args.all_checkpoints)]
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
    samples = [Path(path) for path in args.samples]
    first = checkpoints[0] if checkpoints else samples[0]
    experiment = args.experiment or run_config(first).get("experiment") or run_folder(first).parent.name
    folder = eval_folder(args, parser, first, experiment)
    results = folder / "results.csv"
    columns, rows = read_rows(results)
    done = {cell_key(r["checkpoint"], r["step"], r["sampler"], r["steps"], r["guidance"]) for r in rows}
    seeds = [args.seed + k for k in range(args.num_seeds)]
    scorers = Scorers(args, device)
    per_model = len(args.cells or [0]) if args.cells else len(args.samplers or [0]) * len(args.steps or [0])
    per_model *= len(args.guidance or [0])
    cells_bar = tqdm(total=per_model * len(infos) + len(samples), desc="cells", disable=not args.progress)

    def record(row: dict[str, Any], names: list[str]) -> None:
        nonlocal columns
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "config.yaml").write_text(parser.dump(args))
        columns = columns or [*CELL_COLUMNS, *metric_columns(names), "seconds"]
        if set(row) - set(columns):
            raise ValueError(
                f"{row['run']} gives metrics ({', '.join(sorted(set(row) - set(columns)))}) that "
                f"{results} has no column for: evaluate conditional and unconditional runs apart."
            )
        append_row(results, columns, row)
        rows.append(row)
        cells_bar.update(1)

    try:
        for _, (checkpoint, config, step) in sorted(infos.items()):
            model = DiffusionModule.load_from_checkpoint(checkpoint, map_location="cpu").to(device).eval()
            cells = model_cells(args, model)
            run = f"{run_folder(checkpoint).parent.name}/{run_folder(checkpoint).name}"
            todo = [c for c in cells if cell_key(checkpoint, step, *c) not in done]
            cells_bar.update(len(cells) - len(todo))
            if not todo:
                continue
            scorer = scorers.get(config, model.sample_shape, args.num_samples, model.num_classes)
            labels = generation_labels(model, scorer.labels, args.num_samples)
            check_cells(model, todo, labels)
            batch_size = (
                args.batch_size
                or model.hparams.get("sample_batch_size")
                or (IMAGE_BATCH if len(model.sample_shape) > 1 else None)
            )
            for cell in todo:
                cells_bar.set_postfix_str(
                    f"{run} step {step}: {cell.sampler}, {cell.steps} steps, guidance {cell.guidance}"
                )
                with tqdm(
                    total=args.num_samples * len(seeds), desc="samples", leave=False, disable=not args.progress
                ) as bar:
                    row, names = cell_row(model, scorer, cell, labels, args.num_samples, seeds, batch_size, bar)
                record({"checkpoint": str(checkpoint), "run": run, "step": step, **row}, names)
        for path in samples:
            if any(str(r["checkpoint"]) == str(path) for r in rows):
                cells_bar.update(1)
                continue
            record(*score_samples(scorers, path))
    finally:  # an error's sentence starts on a line of its own
        cells_bar.close()
    return finish(args, folder, experiment, columns, rows, command)


def score_samples(scorers: Scorers, path: Path) -> tuple[dict[str, Any], list[str]]:
    """The row of a samples.npz of `predict`, scored as it is; its sampler, steps and guidance as the file records
    them (else from its run's config)."""
    start, config = time.perf_counter(), run_config(path)
    data = build_data(config)
    arrays = SampleArrays(path, data)
    scorer = scorers.get(config, tuple(data.sample_shape), len(arrays), data.num_classes)
    accumulated, batch = scorer.new(), scorers.args.batch_size or IMAGE_BATCH
    for begin in range(0, len(arrays), batch):
        labels = None if arrays.labels is None else arrays.labels[begin : begin + batch]
        scorer.add(accumulated, arrays.x[begin : begin + batch], labels)
    scores = scorer.scores(accumulated)
    options, checkpoint = (config.get("model") or {}).get("init_args") or {}, config.get("ckpt_path")
    options = {**options, **arrays.sampling}  # the file's own record of its sampling wins over the config's
    step = int(read_checkpoint(checkpoint).get("global_step", 0)) if checkpoint and Path(checkpoint).is_file() else None
    row = {
        "checkpoint": str(path),
        "run": f"{run_folder(path).parent.name}/{run_folder(path).name}",
        "step": step,
        "sampler": options.get("sampler"),
        "steps": options.get("num_inference_steps"),
        "nfe": None,
        "guidance": options.get("guidance_scale", 1.0),
        "samples": len(arrays),
        "seeds": 1,
        **scores,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return row, list(scores)


def finish(args: Namespace, folder: Path, experiment: str, columns: list[str], rows: list[dict], command: str) -> Path:
    """Once every cell is in results.csv: the summaries (written once; a complete rerun leaves them) and W&B."""
    print(markdown_table(columns, rows))
    if (folder / "results.md").exists():
        print(f"All {len(rows)} cells were already in {folder / 'results.csv'}.")
        return folder
    details = (
        f"{args.num_samples} samples per cell, mean ± standard deviation over {args.num_seeds} seeds from "
        f"{args.seed}; reference: {args.reference}; NFE = network calls of one sampling call (a guided "
        "conditional + unconditional pair is one batched call)."
    )
    meta = {"experiment": experiment, "command": command, "details": details, "columns": columns}
    plots = write_summaries(folder, columns, rows, meta)
    if args.wandb_project:
        log_to_wandb(args.wandb_project, folder, experiment, columns, rows, plots)
    print(f"Wrote {folder}: results.csv, results.json, results.md" + "".join(f", {p.name}" for p in plots))
    return folder


def main(argv: list[str] | None = None) -> Path:
    """Entry point; an expected error ends as one line `error: ...` (errors.one_line_errors)."""
    args_list = sys.argv[1:] if argv is None else argv
    with one_line_errors(args_list):
        parser = make_parser()
        args = parse_arguments(parser, args_list, f"{PROGRAM}.tools.evaluate")
        return evaluate(args, parser, "python -m lightning_diffusion.tools.evaluate " + " ".join(args_list))


if __name__ == "__main__":
    main()
