"""The cells of an evaluation grid, and the row of one: a checkpoint's samples with one sampler, number of steps,
guidance scale, guidance interval, guide and post-hoc EMA length, over a few seeds, streamed batch by batch into a
scorer (scoring.py), with the network evaluations counted; or a samples.npz of `predict`, scored as it is."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_diffusion.checkpoints import read_checkpoint
from lightning_diffusion.metrics.validation import sample_batches
from lightning_diffusion.optim import MAX_SIGMA_REL
from lightning_diffusion.tools.posthoc_ema import reconstruct, snapshots_up_to
from lightning_diffusion.tools.report import is_floor
from lightning_diffusion.tools.scoring import SampleArrays, Scorers, build_data, run_config, run_folder


class Cell(NamedTuple):
    sampler: str
    steps: int
    guidance: float
    interval: tuple[float, float] | None = None  # guide at these noise levels only (None: at all)
    guide: str | None = None  # autoguidance's guide checkpoint (None: the unconditional model)
    ema: float | None = None  # the post-hoc EMA length sigma_rel (None: the checkpoint's own weights)


def grid_cells(
    model: nn.Module,
    samplers: list[str] | None,
    steps: list[int] | None,
    guidance: list[float] | None,
    pairs: list[str] | None = None,
    intervals: list[tuple[float, float] | None] | None = None,
    guides: list[str | None] | None = None,
    emas: list[float | None] | None = None,
) -> list[Cell]:
    """The cells of a model's grid: the SAMPLER:STEPS `pairs`, or the `samplers` x `steps` product, each with every
    `guidance` scale, guidance interval, guide and EMA length; what is not given is the model's own (its config's,
    or its formulation's defaults)."""
    guidance = guidance or [float(model.hparams.guidance_scale)]
    intervals = intervals or [model.hparams.get("guidance_interval")]
    guides = guides or [model.hparams.get("guide")]
    if not model.num_classes and any(g != 1.0 for g in guidance) and not any(guides):
        raise ValueError(
            f"--guidance {' '.join(map(str, guidance))} needs a conditional model or a guide; this one has no "
            "classes: leave --guidance out (or give 1.0), or give --guides."
        )
    if pairs:
        split = [pair.rpartition(":") for pair in pairs]
        if not all(name and number.isdigit() and int(number) > 0 for name, _, number in split):
            raise ValueError(f"--cells takes SAMPLER:STEPS pairs such as DDIMScheduler:50, got {' '.join(pairs)}.")
        sampler_steps = [(name, int(number)) for name, _, number in split]
    else:
        sampler_steps = itertools.product(samplers or [model.sampler_name], steps or [model.num_inference_steps])
    axes = itertools.product(sampler_steps, guidance, intervals, guides, emas or [None])
    cells = [Cell(sampler, n, g, None if i is None else tuple(i), guide, e) for (sampler, n), g, i, guide, e in axes]
    return [c for c in cells if model.num_classes or c.guide is not None or c.guidance == 1.0]


def sampling_options(cell: Cell) -> dict[str, Any]:
    """The `DiffusionModule.sample` options of a cell: no interval is every noise level, no guide none."""
    interval = cell.interval if cell.interval is not None else (0.0, float("inf"))
    guide = dict(guidance_interval=interval, guide=cell.guide or "")
    return dict(sampler=cell.sampler, num_inference_steps=cell.steps, guidance_scale=cell.guidance, **guide)


def check_cells(model: nn.Module, cells: list[Cell], labels: Tensor | None) -> None:
    """One sample per sampler, guidance, interval and guide with the fewest steps: a sampler, option or guide the
    model refuses is one sentence before the grid's long work."""
    fewest = min(cell.steps for cell in cells)
    for cell in sorted({cell._replace(steps=fewest, ema=None) for cell in cells}, key=str):
        model.sample(
            1,
            class_labels=None if labels is None else labels[:1],
            generator=torch.Generator().manual_seed(0),
            **sampling_options(cell),
        )


def check_ema_lengths(run: Path, step: int, cells: list[Cell]) -> None:
    """One sentence before the long work if an EMA length of the cells is out of range or the run lacks its
    snapshots (a run trained without callbacks.PostHocEMA)."""
    for sigma_rel in sorted({c.ema for c in cells if c.ema is not None}):
        if not 0 < sigma_rel < MAX_SIGMA_REL:
            raise ValueError(f"--ema_lengths {sigma_rel}: a sigma_rel lies between 0 and 0.28 (EDM2: 0.05-0.15).")
        snapshots_up_to(run, step)


def load_weights(model: nn.Module, own: dict[str, Tensor], run: Path, step: int, sigma_rel: float | None) -> None:
    """The denoiser's weights of a cell: the checkpoint's `own`, or the post-hoc EMA of `sigma_rel` at its step."""
    weights = own if sigma_rel is None else reconstruct(run, sigma_rel, step)[0]
    model.denoiser.load_state_dict({k: v for k, v in weights.items() if k in own})


def interval_text(interval: Any) -> str | None:
    """A guidance interval as results.csv holds it ("[0.28, 5.42]"; None: none)."""
    if interval is None or isinstance(interval, str):
        return interval
    return json.dumps([float(v) for v in interval])


def cell_key(
    checkpoint: Any,
    step: Any,
    sampler: Any,
    steps: Any,
    guidance: Any,
    interval: Any = None,
    guide: Any = None,
    ema: Any = None,
) -> tuple:
    """What identifies a cell in results.csv (a moved last.ckpt has another step, so it is evaluated again); the
    rows of a results.csv written before the interval, guide and EMA axes have None there."""
    number = [None if v is None else float(v) for v in (guidance, ema)]
    return str(checkpoint), step, str(sampler), steps, number[0], interval_text(interval), guide or None, number[1]


class CountEvaluations:
    """Counts the samples that pass through `modules` (the denoiser and any guide) while open, with forward
    pre-hooks: divided by a sampling call's batch, its number of function evaluations per sample (NFE), whatever
    the sampler: a step of Heun's method is 2, a guided step 2 (the model and the unconditional model or the guide),
    a step outside the guidance interval 1."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules, self.rows = modules, 0

    def _count(self, module: nn.Module, args: Any) -> None:
        self.rows += args[0].shape[0]

    def __enter__(self) -> CountEvaluations:
        self.handles = [module.register_forward_pre_hook(self._count) for module in self.modules]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def generation_labels(model: nn.Module, reference_labels: Tensor | None, num_samples: int) -> Tensor | None:
    """The classes asked of a conditional model: those of the first reference samples (their class proportions, as
    `validate`), or every class in turn where the reference has none; None for an unconditional model."""
    if not model.num_classes:
        return None
    if reference_labels is not None and len(reference_labels) >= num_samples:
        return reference_labels[:num_samples]
    return torch.arange(num_samples) % model.num_classes


def cell_row(
    model: nn.Module,
    scorer: Any,
    cell: Cell,
    labels: Tensor | None,
    num_samples: int,
    seeds: list[int],
    batch_size: int | None,
    bar: Any,
) -> tuple[dict[str, Any], list[str]]:
    """The row of one cell (its metrics' mean and standard deviation over `seeds`, floors once, NFE, seconds) and the
    names of its metrics. Seed s draws its noise from torch.Generator().manual_seed(s), as `validate` does."""
    start, per_seed, nfe = time.perf_counter(), [], None
    options = sampling_options(cell)
    with CountEvaluations([model.denoiser, *model.guides.values()]) as counter:
        for seed in seeds:
            accumulated, offset = scorer.new(), 0
            for x in sample_batches(
                model, num_samples, batch_size, labels, torch.Generator().manual_seed(seed), **options
            ):
                nfe = counter.rows / len(x) if nfe is None else nfe  # of the first sampling call
                scorer.add(accumulated, x, None if labels is None else labels[offset : offset + len(x)])
                offset += len(x)
                bar.update(len(x))
            per_seed.append(scorer.scores(accumulated))
    row: dict[str, Any] = {
        "sampler": cell.sampler,
        "steps": cell.steps,
        "nfe": int(nfe) if float(nfe).is_integer() else round(nfe, 3),
        "guidance": cell.guidance,
        "interval": interval_text(cell.interval),
        "guide": cell.guide,
        "ema": cell.ema,
        "samples": num_samples,
        "seeds": len(seeds),
    }
    for name in per_seed[0]:
        values = [scores[name] for scores in per_seed]
        row[name] = statistics.fmean(values)
        if not is_floor(name):
            row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else None
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row, list(per_seed[0])


def score_samples(scorers: Scorers, path: Path, batch_size: int) -> tuple[dict[str, Any], list[str]]:
    """The row of a samples.npz of `predict`, scored as it is `batch_size` samples at a time, and the names of its
    metrics; its sampler, steps and guidance as the file records them (else from its run's config)."""
    start, config = time.perf_counter(), run_config(path)
    data = build_data(config)
    arrays = SampleArrays(path, data)
    scorer = scorers.get(config, tuple(data.sample_shape), len(arrays), data.num_classes)
    accumulated = scorer.new()
    for begin in range(0, len(arrays), batch_size):
        labels = None if arrays.labels is None else arrays.labels[begin : begin + batch_size]
        scorer.add(accumulated, arrays.x[begin : begin + batch_size], labels)
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
