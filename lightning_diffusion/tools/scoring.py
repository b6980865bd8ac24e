"""What `evaluate` scores generated samples against: a run's real data, read once per grid, and the scorers that
turn a stream of generated batches into the sample metrics and their floors.

Points (2D): SWD and MMD against the first n points of the reference, with the floors of sample_quality.floor_sets
(independent draws of the data distribution), exactly as `validate` computes them. Images: each metric's features
(features.Comparison) of the reference are accumulated once, a batch at a time, and the floor set is scored once;
generated images stream through the same extractors, so no image set is held whole, whatever the number of samples.
`Scorers` keeps one scorer per data config and sample count, so an evaluation reads each real set once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from tqdm import tqdm

from lightning_diffusion.data.base import DiffusionDataModule
from lightning_diffusion.metrics.distances import distribution_metrics, floor_metrics
from lightning_diffusion.metrics.features import (
    INCEPTION_PATH,
    ClassifierMetrics,
    Comparison,
    InceptionMetrics,
    SampleMetrics,
)
from lightning_diffusion.metrics.validation import floor_sets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_BATCH = 250  # images generated and scored at a time unless --batch_size or the checkpoint says otherwise
Batches = Iterator[tuple[Tensor, Tensor | None]]  # (x in model space, labels or None)


def run_folder(path: Path) -> Path:
    """The run folder of a checkpoint (run/checkpoints/x.ckpt) or of a file in it (run/samples.npz)."""
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def run_config(path: Path) -> dict[str, Any]:
    """The resolved config.yaml of the run that a checkpoint or samples.npz belongs to."""
    config = run_folder(path) / "config.yaml"
    if not config.is_file():
        raise ValueError(
            f"No config.yaml in {run_folder(path)}: evaluate reads the run's data from the config.yaml of its run "
            f"folder; give {path.name} inside its run folder (outputs/<experiment>/version_N)."
        )
    return yaml.safe_load(config.read_text())


def data_key(config: dict[str, Any]) -> str:
    return json.dumps(config.get("data"), sort_keys=True)


def build_data(config: dict[str, Any]) -> DiffusionDataModule:
    """The run's DataModule, from the `data` section of its config, with every split set up (may read files)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(DiffusionDataModule, "data")
    data = parser.instantiate(parser.parse_object({"data": config["data"]})).data
    data.prepare_data()
    data.setup("fit")
    return data


def held_out(data: DiffusionDataModule) -> Dataset:
    """The split that `test` scores against: the test split where the data has one, else the validation split."""
    return data.splits.get("test") or data.splits["val"]


class SampleArrays(Dataset):
    """Samples (and labels) in model space from samples.npz (predict's format) or a folder of images."""

    def __init__(self, path: Path, data: DiffusionDataModule) -> None:
        shape = tuple(data.sample_shape)
        if path.suffix == ".npz":
            with np.load(path) as arrays:
                x, labels = torch.from_numpy(arrays["samples"]), arrays.get("class_labels")
                # what made them (callbacks.sample_writer.sampling_record; absent from files of older versions)
                self.sampling = {
                    k: arrays[k].item() for k in ("sampler", "num_inference_steps", "guidance_scale") if k in arrays
                }
            if x.dtype == torch.uint8:  # images as predict writes them: (N, H, W, C) in 0..255
                x = x.permute(0, 3, 1, 2).float() / 255
            self.labels = None if labels is None else torch.from_numpy(labels).long()
        else:
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(
                    f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}): give a folder of images or a .npz."
                )
            mode = "L" if shape[0] == 1 else "RGB"
            x = (
                torch.stack(
                    [
                        torch.from_numpy(np.array(Image.open(f).convert(mode))).reshape(*shape[1:], -1).permute(2, 0, 1)
                        for f in files
                    ]
                ).float()
                / 255
            )
            self.labels, self.sampling = None, {}
        if tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"{path} holds samples of shape {tuple(x.shape[1:])}, but the run's data has {shape}: "
                "give samples of the run's data."
            )
        mean, std = (torch.tensor(s).view(1, -1, *([1] * (len(shape) - 1))) for s in (data.data_mean, data.data_std))
        self.x = (x.float() - mean) / std

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return (self.x[i],) if self.labels is None else (self.x[i], self.labels[i])


def reference_set(data: DiffusionDataModule, reference: str) -> Dataset:
    """`held_out` (the split `test` uses), `train`, or a samples.npz or folder of images."""
    if reference == "held_out":
        return held_out(data)
    if reference == "train":
        return data.splits["train"]
    path = Path(reference)
    if not path.exists():
        raise ValueError(f"--reference {reference} is neither held_out, train, nor an existing .npz or image folder.")
    return SampleArrays(path, data)


def batches(dataset: Dataset, batch_size: int) -> Batches:
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=default_collate):
        yield batch[0], (batch[1] if len(batch) > 1 else None)


def first(dataset: Dataset, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
    """Items [start, stop) of a dataset, stacked."""
    xs, ys = zip(*[(b[0], b[1] if len(b) > 1 else None) for b in Subset(dataset, range(start, stop))], strict=False)
    return torch.stack(xs), (None if ys[0] is None else torch.as_tensor(ys).long())


class PointScorer:
    """2D: generated points against the first n reference points (model space), with precomputed floors."""

    def __init__(self, data: DiffusionDataModule, reference: str, num_samples: int) -> None:
        ref, floor_from = reference_set(data, reference), held_out(data)
        start = num_samples if reference == "held_out" else 0  # as validate: the floor's points after the reference's
        drawn = hasattr(data, "independent_draws")  # else the floor is held-out points
        if len(ref) < num_samples or (not drawn and len(floor_from) < start + num_samples):
            raise ValueError(
                f"{num_samples} samples need {num_samples} reference points (and as many held-out ones for the floor), "
                f"but the {reference} set has {len(ref)}: lower --num_samples or hold out more (num_val_samples)."
            )
        self.reference, self.labels = first(ref, 0, num_samples)
        fallback = None if drawn else first(floor_from, start, start + num_samples)[0]
        self.floors = floor_metrics(self.reference, floor_sets(data, self.reference, fallback, self.labels))

    def new(self) -> list[Tensor]:
        return []

    def add(self, generated: list[Tensor], x: Tensor, labels: Tensor | None = None) -> None:
        generated.append(x.cpu())

    def scores(self, generated: list[Tensor]) -> dict[str, float]:
        metrics = distribution_metrics(torch.cat(generated), self.reference, floors=self.floors)
        return {name: float(value) for name, value in metrics.items()}


class ImageScorer:
    """Images: each metric's features of the reference, accumulated once, and the floor set, scored once; generated
    images streamed, one set at a time.

    The floor set is the held-out split: its images after the first n when it is also the reference (as `test`
    does), else its first n, or all of it where it has fewer (the floor_samples column says how many)."""

    def __init__(
        self,
        data: DiffusionDataModule,
        reference: str,
        num_samples: int,
        metrics: list[SampleMetrics],
        batch_size: int,
        device: torch.device,
        progress: Callable[[Batches, str], Batches],
    ) -> None:
        self.batch_size = batch_size
        shape = (1, -1, 1, 1)
        self.mean, self.std = (torch.tensor(s, device=device).view(shape) for s in (data.data_mean, data.data_std))
        ref, floor_from = reference_set(data, reference), held_out(data)
        if reference == "held_out":  # as `test`: the first n score the samples, the next n the floor
            if len(ref) < 2 * num_samples:
                raise ValueError(
                    f"{num_samples} samples against the held-out split need {2 * num_samples} images (half for the "
                    f"floor), but it has {len(ref)}: use --reference train (or a folder) or lower --num_samples."
                )
            ref, floor_from = Subset(ref, range(num_samples)), Subset(ref, range(num_samples, 2 * num_samples))
        else:
            floor_from = Subset(floor_from, range(min(num_samples, len(floor_from))))
        self.floor_samples = len(floor_from)
        self.comparisons = [Comparison(metric) for metric in metrics]
        for x, _ in progress(batches(ref, batch_size), f"reference ({len(ref)} real)"):
            self.add(self.comparisons, x, real=True)
        for x, y in progress(batches(floor_from, batch_size), f"floor ({len(floor_from)} real)"):
            self.add(self.comparisons, x, y)
        for comparison in self.comparisons:
            comparison.score_floor()
        labels = [y for _, y in batches(Subset(ref, range(min(num_samples, len(ref)))), batch_size)]
        self.labels = None if not labels or labels[0] is None else torch.cat(labels)

    def new(self) -> list[Comparison]:
        """The comparisons with their generated set emptied: they hold one generated set at a time."""
        for comparison in self.comparisons:
            comparison.reset()
        return self.comparisons

    def add(self, comparisons: list[Comparison], x: Tensor, labels: Tensor | None = None, real: bool = False) -> None:
        images = x.to(self.mean.device).float() * self.std + self.mean  # data space, [0, 1]
        for comparison in comparisons:
            comparison.add(images, labels, real)

    def scores(self, comparisons: list[Comparison]) -> dict[str, float]:
        metrics: dict[str, float] = {"floor_samples": self.floor_samples}
        for comparison in comparisons:
            metrics |= {name: float(value) for name, value in comparison.scores().items()}
        return metrics


def image_metrics(args: Namespace, device: torch.device) -> list[SampleMetrics]:
    metrics: list[SampleMetrics] = [ClassifierMetrics(args.classifier)] if args.classifier else []
    if args.inception_weights and Path(args.inception_weights).is_file():
        metrics.append(InceptionMetrics(args.inception_weights))
    if not metrics:
        raise ValueError(
            "Images are scored in a feature space: give --classifier (an ImageClassifier run, e.g. "
            f"outputs/mnist_classifier) or put the Inception weights at {args.inception_weights or INCEPTION_PATH}."
        )
    for metric in metrics:
        metric.setup(device)
    return metrics


class Scorers:
    """The scorers of one evaluation, one per data config and sample count: the real data is read once per grid."""

    def __init__(self, args: Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.scorers: dict[tuple[str, int], Any] = {}
        self.metrics: list[SampleMetrics] = []

    def progress(self, stream: Iterator, description: str) -> Iterator:
        return iter(tqdm(stream, desc=description, leave=False, disable=not self.args.progress, unit="batch"))

    def get(self, config: dict[str, Any], shape: tuple[int, ...], num_samples: int, num_classes: int | None) -> Any:
        key = (data_key(config), num_samples)
        if key not in self.scorers:
            data = build_data(config)
            if tuple(data.sample_shape) != tuple(shape):
                raise ValueError(
                    f"The run's data makes {tuple(data.sample_shape)} samples but its checkpoint "
                    f"{tuple(shape)}: evaluate a checkpoint with the run it was trained in."
                )
            if len(shape) == 1:
                self.scorers[key] = PointScorer(data, self.args.reference, num_samples)
            else:
                self.metrics = self.metrics or image_metrics(self.args, self.device)
                self.scorers[key] = ImageScorer(
                    data,
                    self.args.reference,
                    num_samples,
                    self.metrics,
                    self.args.batch_size or IMAGE_BATCH,
                    self.device,
                    self.progress,
                )
        for metric in self.metrics if len(shape) > 1 else []:
            metric.check(tuple(shape), num_classes)
        return self.scorers[key]
