"""The guided network of sampling: classifier-free guidance or autoguidance, limited to a guidance interval."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_diffusion.checkpoints import check_checkpoint, checkpoint_named
from lightning_diffusion.formulations import Formulation
from lightning_diffusion.formulations.ddpm import guided_output, in_interval


@dataclass
class GuidedNet:
    """net(x_in, time_input) of a formulation's sampler: `denoiser` at `class_labels`, guided with scale `scale`
    by the unconditional model (the label `null_label`) or by `guide`, at the noise levels of `interval` only (all
    where None)."""

    denoiser: nn.Module
    formulation: Formulation
    class_labels: Tensor | None
    null_label: int | None
    scale: float
    guide: nn.Module | None = None
    interval: tuple[float, float] | None = None

    def __call__(self, x_in: Tensor, time_input: Tensor) -> Tensor:
        inside = None
        if self.interval is not None:
            time_input = time_input.expand(x_in.shape[0]) if time_input.ndim == 0 else time_input
            inside = in_interval(self.formulation.noise_level(time_input), self.interval)
        return guided_output(
            self.denoiser, x_in, time_input, self.class_labels, self.scale, self.null_label, self.guide, inside
        )


def check_interval(interval: tuple[float, float] | None) -> None:
    """One sentence unless `interval` is [sigma_lo, sigma_hi] with 0 <= sigma_lo <= sigma_hi."""
    if interval is not None and (len(interval) != 2 or not 0 <= interval[0] <= interval[1]):
        raise ValueError(
            f"guidance_interval must be [sigma_lo, sigma_hi] with 0 <= sigma_lo <= sigma_hi, got {list(interval)}: "
            "give two noise levels, e.g. [0.28, 5.42]."
        )


def fits(model: nn.Module, guide: nn.Module) -> str | None:
    """What keeps `guide` from guiding `model` (None if nothing): both must make the same data with the same
    formulation, prediction target and noise schedule, so that their outputs at one input mean the same."""
    main_f, guide_f = model.formulation, guide.formulation
    facts = {
        "sample shape": (tuple(model.sample_shape), tuple(guide.sample_shape)),
        "num_classes": (model.num_classes, guide.num_classes),
        "formulation": (type(main_f).__name__, type(guide_f).__name__),
        "prediction_type": (getattr(main_f, "prediction_type", None), getattr(guide_f, "prediction_type", None)),
        "sigma_data": (float(getattr(main_f, "sigma_data", 0)), float(getattr(guide_f, "sigma_data", 0))),
    }
    for name, (main, theirs) in facts.items():
        if main != theirs:
            return f"its {name} is {theirs}, the model's {main}"
    if hasattr(main_f, "alphas_cumprod") and not torch.equal(main_f.alphas_cumprod, guide_f.alphas_cumprod.cpu()):
        return "its noise schedule (alphas_cumprod) differs from the model's"
    return None


def load_guide(model: nn.Module, path: str) -> nn.Module:
    """The denoiser of the checkpoint `path` (a .ckpt, run folder or experiment folder) as a guide of `model`, in
    eval mode and without gradients; one sentence if it is missing or does not fit."""
    found = checkpoint_named(path)
    if found is None:
        raise ValueError(f"guide {path} names no checkpoint: give a .ckpt, a run folder or an experiment folder.")
    check_checkpoint(found, type(model).__name__, needed_by="guide needs")
    guide = type(model).load_from_checkpoint(found, map_location="cpu")
    problem = fits(model, guide)
    if problem is not None:
        raise ValueError(f"guide {Path(path)} cannot guide this model: {problem}; guide with a model of the same data.")
    return guide.denoiser.eval().requires_grad_(False)


def guide_network(loaded: dict[str, nn.Module], model: nn.Module, path: str | None) -> nn.Module | None:
    """The guide of `path` (None: no guide) on the model's device, loaded once into `loaded`."""
    if path and path not in loaded:
        loaded[path] = load_guide(model, path)
    return loaded[path].to(model.device) if path else None
