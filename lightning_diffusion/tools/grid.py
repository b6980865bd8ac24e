"""The cells of an evaluation grid, and the row of one: a checkpoint's samples with one sampler, number of steps and
guidance scale, over a few seeds, streamed batch by batch into a scorer (scoring.py), with the network calls counted;
or a samples.npz of `predict`, scored as it is."""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_diffusion.checkpoints import read_checkpoint
from lightning_diffusion.metrics.validation import sample_batches
from lightning_diffusion.tools.report import is_floor
from lightning_diffusion.tools.scoring import SampleArrays, Scorers, build_data, run_config, run_folder


class Cell(NamedTuple):
    sampler: str
    steps: int
    guidance: float


def grid_cells(
    model: nn.Module,
    samplers: list[str] | None,
    steps: list[int] | None,
    guidance: list[float] | None,
    pairs: list[str] | None = None,
) -> list[Cell]:
    """The cells of a model's grid: the SAMPLER:STEPS `pairs`, or the `samplers` x `steps` product, each with every
    `guidance` scale; what is not given is the model's own (its config's, or its formulation's defaults)."""
    guidance = guidance or [float(model.hparams.guidance_scale)]
    if not model.num_classes and any(g != 1.0 for g in guidance):
        raise ValueError(
            f"--guidance {' '.join(map(str, guidance))} needs a conditional model; this one has no "
            "classes: leave --guidance out (or give 1.0)."
        )
    if pairs:
        split = [pair.rpartition(":") for pair in pairs]
        if not all(name and number.isdigit() and int(number) > 0 for name, _, number in split):
            raise ValueError(f"--cells takes SAMPLER:STEPS pairs such as DDIMScheduler:50, got {' '.join(pairs)}.")
        sampler_steps = [(name, int(number)) for name, _, number in split]
    else:
        sampler_steps = itertools.product(samplers or [model.sampler_name], steps or [model.num_inference_steps])
    return [Cell(sampler, n, g) for (sampler, n), g in itertools.product(sampler_steps, guidance)]


def check_cells(model: nn.Module, cells: list[Cell], labels: Tensor | None) -> None:
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


class CountCalls:
    """Counts the forward calls of `module` while open (a forward pre-hook).

    On the denoiser this is the number of function evaluations of a sampling call, whatever the sampler: a step of
    Heun's method is 2, and classifier-free guidance batches the conditional and unconditional inputs into one call,
    so a guided step counts 1 (NFE here means network calls, not images through the network)."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.calls = module, 0

    def _count(self, module: nn.Module, args: Any) -> None:
        self.calls += 1

    def __enter__(self) -> CountCalls:
        self.handle = self.module.register_forward_pre_hook(self._count)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


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
    options = dict(sampler=cell.sampler, num_inference_steps=cell.steps, guidance_scale=cell.guidance)
    with CountCalls(model.denoiser) as counter:
        for seed in seeds:
            accumulated, offset = scorer.new(), 0
            for x in sample_batches(
                model, num_samples, batch_size, labels, torch.Generator().manual_seed(seed), **options
            ):
                nfe = counter.calls if nfe is None else nfe  # the calls of the first sampling call
                scorer.add(accumulated, x, None if labels is None else labels[offset : offset + len(x)])
                offset += len(x)
                bar.update(len(x))
            per_seed.append(scorer.scores(accumulated))
    row: dict[str, Any] = {
        "sampler": cell.sampler,
        "steps": cell.steps,
        "nfe": nfe,
        "guidance": cell.guidance,
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
