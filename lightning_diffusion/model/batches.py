"""What the module reads from a batch, and the training samples a formulation measures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

# A batch of samples, with or without labels: a tensor, (x, y) or {"x": ..., "y": ...}
Batch = Tensor | Sequence[Tensor] | dict


def unpack(batch: Batch, num_classes: int | None) -> tuple[Tensor, Tensor | None]:
    """The samples and, for a conditional model (`num_classes` set), their labels; one sentence if they are missing."""
    if isinstance(batch, dict):
        x, y = batch["x"], batch.get("y")
    elif isinstance(batch, (tuple, list)):
        x, y = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        x, y = batch, None
    if not num_classes:
        return x, None
    if y is None:
        raise ValueError(f"The model is conditional (num_classes={num_classes}) but the batches carry no labels.")
    return x, y


def drop_labels(labels: Tensor, probability: float, null_label: int) -> Tensor:
    """Replaces each label by the null label with `probability`: the unconditional model of classifier-free guidance
    (Ho & Salimans 2022) trained alongside the conditional one."""
    drop = torch.rand(labels.shape, device=labels.device) < probability
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def training_samples(
    datamodule: Any, num_classes: int | None, needed_by: str, device: torch.device, num_samples: int = 1024
) -> Tensor:
    """Up to `num_samples` samples of the datamodule's training set on `device`, evenly spread over it (the same on
    every rank, so that what a formulation measures on them agrees); one sentence if there is no datamodule."""
    if datamodule is None:
        raise ValueError(
            f"{needed_by} measures the data on the datamodule's training set, but this fit has no datamodule: give "
            "the measured value (e.g. EDM's sigma_data) or fit with a datamodule."
        )
    dataset = datamodule.train_dataloader().dataset
    index = torch.linspace(0, len(dataset) - 1, min(num_samples, len(dataset))).long().tolist()
    return unpack(default_collate([dataset[i] for i in index]), num_classes)[0].to(device)


def requested(
    batch: Sequence[Tensor], seed: int, sample_shape: tuple[int, ...], num_classes: int | None
) -> tuple[Tensor | None, Tensor, torch.Generator]:
    """The class labels, x_T and sampler generator of `predict`'s requested samples (data.SampleRequests: class
    labels, -1 for none, and sample indices): sample i of seed s has its own noise, however the requests are split
    over batches and devices; a conditional sample asked for no class gets class i mod num_classes."""
    requested, indices = batch
    labels = requested.long() if num_classes else None
    if labels is not None and (labels < 0).any():
        labels = indices % num_classes
    base = seed << 32
    noise = torch.stack(
        [torch.randn(sample_shape, generator=torch.Generator().manual_seed(base + int(i))) for i in indices]
    )
    return labels, noise, torch.Generator().manual_seed(base + int(indices[0]))
