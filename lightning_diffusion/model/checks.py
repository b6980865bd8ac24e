"""Whether the arguments of a DiffusionModule agree with each other: one sentence each, before any work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import SchedulerMixin
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_diffusion.errors import at_least, check_range
from lightning_diffusion.formulations import VP, Formulation
from lightning_diffusion.formulations.ddpm import LossWeighting, PredictionType
from lightning_diffusion.model.guidance import check_interval


def resolve_formulation(
    formulation: Formulation | None,
    scheduler: SchedulerMixin | None,
    prediction_type: PredictionType,
    loss_weighting: LossWeighting,
    min_snr_gamma: float,
) -> Formulation:
    """The model's formulation: the one given, or VP over `scheduler` (the arguments of DDPM runs and checkpoints)."""
    if formulation is None and scheduler is None:
        raise ValueError(
            "The model has neither a scheduler (the VP/DDPM formulation) nor a formulation: give model.scheduler, "
            "or model.formulation (e.g. lightning_diffusion.formulations.EDM), or --config configs/<experiment>.yaml."
        )
    if formulation is None:
        return VP(scheduler, prediction_type, loss_weighting, min_snr_gamma)
    vp_options_given = {
        "scheduler": scheduler is not None,
        "prediction_type": prediction_type != "epsilon",
        "loss_weighting": loss_weighting != "uniform",
        "min_snr_gamma": min_snr_gamma != 5.0,
    }
    for name, given in vp_options_given.items():
        if given:
            raise ValueError(
                f"{name} is an option of the default VP formulation, but the model's formulation is "
                f"{type(formulation).__name__}: remove it (a VP formulation takes it among its own init_args)."
            )
    return formulation


def check_arguments(
    denoiser: nn.Module, formulation: Formulation, sampler: str, num_inference_steps: int, options: dict[str, Any]
) -> None:
    """Raise a one-sentence ValueError for the first disagreement among DiffusionModule's arguments (`options`, by
    name); warn where a choice is legal but useless."""
    formulation.check_sampler(sampler, dict(options["sampler_kwargs"] or {}), num_inference_steps)
    label_dropout, guidance_scale = options["label_dropout"], options["guidance_scale"]
    num_classes, metrics, shape = options["num_classes"], options["sample_metrics"], tuple(options["sample_shape"])
    check_range("DiffusionModule", "guidance_scale", guidance_scale, 0)
    at_least("DiffusionModule", 0, val_num_samples=options["val_num_samples"], sample_seed=options["sample_seed"])
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}.")
    denoiser_classes = getattr(denoiser, "num_classes", num_classes)
    if denoiser_classes != num_classes:
        raise ValueError(
            f"The denoiser has num_classes={denoiser_classes} but the data has {num_classes}: "
            "let the CLI link them, or pass the same value to both."
        )
    if guidance_scale != 1.0 and not num_classes and not options.get("guide"):
        raise ValueError(
            f"guidance_scale={guidance_scale} needs a conditional model (the data has no classes) or a guide."
        )
    check_interval(options.get("guidance_interval"))
    if metrics and len(shape) != 3:
        raise ValueError(f"sample_metrics score images (C, H, W), but the samples have shape {shape}.")
    if metrics and not options["val_num_samples"]:
        raise ValueError("sample_metrics are computed on val_num_samples samples: set val_num_samples (e.g. 1000).")
    batch_size = options["sample_batch_size"]
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"sample_batch_size must be positive (or null for all at once), got {batch_size}.")
    if guidance_scale != 1.0 and label_dropout == 0.0 and not options.get("guide"):
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


def check_held_out(val_num_samples: int, datamodule: Any, stage: str) -> None:
    """The sample metrics compare val_num_samples generated samples with as many held-out ones and take their
    floor from as many more: the evaluation set of `stage` must hold 2 x val_num_samples, or the metrics would use
    fewer."""
    if not val_num_samples or datamodule is None:
        return
    split = "test" if stage == "test" else "validation"
    held_out = len((datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader()).dataset)
    if 2 * val_num_samples > held_out:
        raise ValueError(
            f"val_num_samples={val_num_samples} needs {2 * val_num_samples} held-out samples (half compared with the "
            f"generated ones, half for the real-vs-real floor), but the {split} set has {held_out}: lower "
            f"val_num_samples to at most {held_out // 2} or hold out more data."
        )
