"""Evaluation samples: generated against held-out ones at the end of an evaluation, over all ranks.

Each rank keeps 2m held-out samples (m = val_num_samples / world size): the first m are compared with m samples it
generates with the same class proportions. The real-vs-real floor compares them with sets drawn as an exact model
would sample: FLOOR_DRAWS independent draws of the data distribution where the datamodule can make them
(`independent_draws`, the 2D data), else the other m held-out samples. The samples of all ranks are gathered before
any metric, so every rank computes, and logs, the global value. The first of the samples this rank generated are
kept as a `ValidationSamples` record, for the plots to show.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_diffusion.metrics.distances import distribution_metrics

FLOOR_DRAWS = 8  # independent real sets whose mean distance is the floor (metrics.floor_metrics says why)
# SWD and MMD compare the first 2,000 points of each set (chi2 all of them): at 20,000 they cost 2.4 s and
# 20 s each on one CPU thread, nine times per validation, for a spread that hardly shrinks (notes/metrics_2d.md)
DISTANCE_POINTS = 2000


class HeldOut:
    """The held-out samples (and labels) of one evaluation, up to `2 * num_samples` of them on this rank."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples
        self.points: list[Tensor] = []
        self.labels: list[Tensor] = []

    def collect(self, x: Tensor, y: Tensor | None) -> None:
        if self.num_samples and sum(len(p) for p in self.points) < 2 * self.num_samples:
            self.points.append(x.detach())
            if y is not None:
                self.labels.append(y.detach())

    def take(self) -> tuple[Tensor | None, Tensor | None]:
        """The collected points and labels (None if none), emptying the collection for the next evaluation."""
        points, labels = self.points, self.labels
        self.points, self.labels = [], []
        return (torch.cat(points) if points else None), (torch.cat(labels) if labels else None)


def sample_batches(
    module: L.LightningModule,
    num_samples: int,
    batch_size: int | None,
    labels: Tensor | None,
    generator: torch.Generator,
    **options: Any,
) -> Iterator[Tensor]:
    """`num_samples` samples in model space, `batch_size` at a time (None: all at once), with the class `labels`, all
    drawn from one `generator`; `options` go to `module.sample` (sampler, num_inference_steps, guidance_scale)."""
    chunk = batch_size or max(num_samples, 1)
    for start in range(0, num_samples, chunk):
        yield module.sample(
            min(chunk, num_samples - start),
            generator=generator,
            data_space=False,
            class_labels=None if labels is None else labels[start : start + chunk],
            **options,
        )


@dataclass
class ValidationSamples:
    """The first of the samples that the sample metrics of one evaluation generated on this rank, in model space:
    `samples[i]` from the standard normal x_T `noise[i]` with class `labels[i]`; and `steps`, where asked for: after
    every sampler step, the time t and x_t of the first samples (as `DiffusionModule.sample`'s callback sees them)."""

    samples: Tensor
    noise: Tensor
    labels: Tensor | None = None
    steps: list[tuple[Tensor, Tensor]] = field(default_factory=list)


class StepRecorder:
    """A sampling callback that keeps t and x_t[:num_samples] after every step."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples
        self.steps: list[tuple[Tensor, Tensor]] = []

    def __call__(self, i: int, t: Tensor, x_t: Tensor, x0_pred: Tensor) -> None:
        self.steps.append((t, x_t[: self.num_samples].clone()))


def generate(
    module: L.LightningModule, num_samples: int, labels: Tensor | None, keep: int = 0, keep_steps: int = 0
) -> tuple[Tensor, ValidationSamples]:
    """`num_samples` samples (model space) with the class `labels`, in chunks of `sample_batch_size`, and the record
    of the first `keep` of them, with the steps of the first `keep_steps`; each rank its own noise (the seed offset
    by the rank), the same at every evaluation."""
    generator = torch.Generator().manual_seed(module.hparams.sample_seed + 7919 * module.global_rank)
    chunk = module.hparams.sample_batch_size or max(num_samples, 1)
    samples, noises, recorders = [], [], []
    for start in range(0, num_samples, chunk):
        n = min(chunk, num_samples - start)
        noise = torch.randn((n, *module.sample_shape), generator=generator)  # as sample() draws it
        recorder = StepRecorder(keep_steps - start) if start < keep_steps else None
        chunk_labels = None if labels is None else labels[start : start + n]
        options = getattr(module, "val_sampling", {})  # the metrics' own sampler where one is set
        samples.append(
            module.sample(
                n, chunk_labels, generator=generator, callback=recorder, data_space=False, noise=noise, **options
            )
        )
        noises.append(noise[: max(keep - start, 0)])
        recorders += [recorder] if recorder is not None else []
    samples = torch.cat(samples)
    # every chunk takes the same steps: step j of the kept samples is step j of each chunk's
    steps = [(step[0][0], torch.cat([x for _, x in step])) for step in zip(*(r.steps for r in recorders), strict=True)]
    kept_labels = None if labels is None else labels[:keep].clone()
    noise = torch.cat(noises).to(module.device)
    return samples, ValidationSamples(samples[:keep].clone(), noise, kept_labels, steps)  # clones: not views of all


def floor_sets(datamodule: Any, real: Tensor, real_floor: Tensor | None, labels: Tensor | None) -> list[Tensor]:
    """The sets the floor compares with `real`: FLOOR_DRAWS independent draws of the data distribution with the
    classes `labels` where `datamodule` makes them, else the held-out `real_floor`."""
    draw = getattr(datamodule, "independent_draws", None)
    if draw is None:
        return [real_floor]
    return [x.to(real.device) for x in draw(len(real), FLOOR_DRAWS, labels)]


def samples_per_rank(num_samples: int, world_size: int, held_out: int) -> int:
    """How many samples one rank generates for the sample metrics: its share of `num_samples`, at most half of its
    `held_out` points (the other half is the floor's)."""
    return min(num_samples // world_size, held_out // 2)


def sample_quality(
    module: L.LightningModule, real: Tensor, labels: Tensor | None, keep: int = 0, keep_steps: int = 0
) -> tuple[dict[str, Tensor], ValidationSamples, int]:
    """SWD and MMD with their floors, and the module's image `sample_metrics`, the same on every rank; the record of
    the first `keep` samples this rank generated for them (with the steps of the first `keep_steps`); and the number
    of generated samples they used, all ranks' (`val_num_samples`, rounded down to a multiple of the ranks)."""
    trainer = module.trainer
    m = samples_per_rank(module.hparams.val_num_samples, trainer.world_size, len(real))
    m = int(trainer.strategy.reduce(torch.tensor(m, device=module.device), reduce_op="min"))
    real_a, real_b = real[:m], real[m : 2 * m]
    labels_a = labels[:m] if labels is not None else None  # generated with the class proportions of real_a
    labels_b = labels[m : 2 * m] if labels is not None else None
    generated, record = generate(module, m, labels_a, keep, keep_steps)

    def gather(x: Tensor | None) -> Tensor | None:
        return module.all_gather(x).flatten(0, 1) if x is not None and trainer.world_size > 1 else x

    real_a, real_b, generated, labels_a, labels_b = map(gather, (real_a, real_b, generated, labels_a, labels_b))
    floors = floor_sets(getattr(trainer, "datamodule", None), real_a, real_b, labels_a)
    metrics = distribution_metrics(generated, real_a, floors, max_points=DISTANCE_POINTS)
    if module.sample_metrics:  # in data space, where images are in [0, 1]
        images = [module.to_data_space(x).float() for x in (generated, real_a, real_b)]
        for metric in module.sample_metrics:
            metrics |= metric.evaluate(images[0], images[1], images[2], labels_a, labels_b)
    return metrics, record, len(generated)
