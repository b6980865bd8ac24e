"""One cell of an evaluation grid: a checkpoint's samples with one sampler, number of steps and guidance scale, over
a few seeds, streamed batch by batch into a scorer (scoring.py), with the network calls counted."""

from __future__ import annotations

import statistics
import time
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_diffusion.metrics.validation import sample_batches
from lightning_diffusion.tools.report import is_floor


class Cell(NamedTuple):
    sampler: str
    steps: int
    guidance: float


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
