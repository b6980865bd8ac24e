"""The sampler of the sample metrics (`val_sampler`, `val_num_inference_steps`): a few-step one can draw many
validation samples cheaply while the plots, and `sample`, keep the model's."""

from __future__ import annotations

from typing import Any

from lightning_diffusion.errors import check_range
from lightning_diffusion.formulations import Formulation


def metric_sampling(formulation: Formulation, sampler: str, num_inference_steps: int, options: dict[str, Any]) -> dict:
    """The options of `DiffusionModule.sample` with which the sample metrics sample, where `options`' val_sampler or
    val_num_inference_steps differ from the model's `sampler` and `num_inference_steps` (a different sampler with
    its defaults, not the model's sampler_kwargs); {} where they are the model's. One sentence naming the option if
    the formulation cannot sample with them."""
    val_sampler, val_steps = options.get("val_sampler"), options.get("val_num_inference_steps")
    check_range("DiffusionModule", "val_num_inference_steps", val_steps, 1)
    name, steps = val_sampler or sampler, num_inference_steps if val_steps is None else val_steps
    if (name, steps) == (sampler, num_inference_steps):
        return {}
    kwargs = dict(options.get("sampler_kwargs") or {}) if name == sampler else {}
    try:
        formulation.check_sampler(name, kwargs, steps)
    except ValueError as error:
        raise ValueError(f"DiffusionModule val_sampler={name!r}, val_num_inference_steps={steps}: {error}") from None
    return {"sampler": name, "num_inference_steps": steps, "sampler_kwargs": kwargs}
