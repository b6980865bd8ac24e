"""Whether the arguments of a DiffusionModule agree with each other: one sentence each, before any work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn


def check_arguments(
    denoiser: nn.Module,
    formulation: Any,
    *,
    sampler: str,
    sampler_kwargs: dict[str, Any],
    num_inference_steps: int,
    label_dropout: float,
    guidance_scale: float,
    val_num_samples: int,
    sample_metrics: list[Any] | None,
    sample_batch_size: int | None,
    sample_shape: tuple[int, ...],
    num_classes: int | None,
) -> None:
    """Raise a one-sentence ValueError for the first disagreement; warn where a choice is legal but useless."""
    # an unknown sampler or option is one sentence now, not at the first validation
    formulation.check_sampler(sampler, sampler_kwargs, num_inference_steps)
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}.")
    denoiser_classes = getattr(denoiser, "num_classes", num_classes)
    if denoiser_classes != num_classes:
        raise ValueError(
            f"The denoiser has num_classes={denoiser_classes} but the data has {num_classes}: "
            "let the CLI link them, or pass the same value to both."
        )
    if guidance_scale != 1.0 and not num_classes:
        raise ValueError(f"guidance_scale={guidance_scale} needs a conditional model (the data has no classes).")
    if sample_metrics and len(sample_shape) != 3:
        raise ValueError(f"sample_metrics score images (C, H, W), but the samples have shape {tuple(sample_shape)}.")
    if sample_metrics and not val_num_samples:
        raise ValueError("sample_metrics are computed on val_num_samples samples: set val_num_samples (e.g. 1000).")
    if sample_batch_size is not None and sample_batch_size < 1:
        raise ValueError(f"sample_batch_size must be positive (or null for all at once), got {sample_batch_size}.")
    if guidance_scale != 1.0 and label_dropout == 0.0:
        rank_zero_warn(
            "guidance_scale != 1 with label_dropout = 0: the null label is never trained, so guidance is noise."
        )


def sample_labels(
    num_samples: int,
    class_labels: None | int | Sequence[int] | Tensor,
    num_classes: int | None,
    device: torch.device,
) -> Tensor | None:
    """The class labels of `num_samples` samples: as given (one label for all, or one each), every class in turn
    when none are given to a conditional model, None for an unconditional one; one sentence if they do not fit."""
    if not num_classes:
        if class_labels is not None:
            raise ValueError("class_labels were given but the model is unconditional (num_classes is None).")
        return None
    if class_labels is None:
        return torch.arange(num_samples, device=device) % num_classes
    labels = torch.as_tensor(class_labels, device=device).long().flatten()
    labels = labels.expand(num_samples) if labels.numel() == 1 else labels
    if labels.numel() != num_samples or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"class_labels must be {num_samples} labels (or one) in [0, {num_classes - 1}], "
            f"got {labels.numel()} in [{labels.min().item()}, {labels.max().item()}]."
        )
    return labels


def check_held_out(val_num_samples: int, held_out: int, stage: str) -> None:
    """The sample metrics compare val_num_samples generated samples with as many held-out ones and take their
    floor from as many more: the evaluation set must hold 2 x val_num_samples, or the metrics would use fewer."""
    if 2 * val_num_samples > held_out:
        raise ValueError(
            f"val_num_samples={val_num_samples} needs {2 * val_num_samples} held-out samples (half compared with the "
            f"generated ones, half for the real-vs-real floor), but the {stage} set has {held_out}: lower "
            f"val_num_samples to at most {held_out // 2} or hold out more data."
        )
