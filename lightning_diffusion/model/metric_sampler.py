"""The sampler of the sample metrics (`val_sampler`, `val_num_inference_steps`, `val_sampler_kwargs`): a few-step
one can draw many validation samples cheaply while the plots, and `sample`, keep the model's."""

from __future__ import annotations

from typing import Any

from lightning_diffusion.errors import check_range
from lightning_diffusion.formulations import Formulation


def metric_sampling(formulation: Formulation, sampler: str, num_inference_steps: int, options: dict[str, Any]) -> dict:
    """The options of `DiffusionModule.sample` with which the sample metrics sample, where `options`' val_sampler,
    val_num_inference_steps or val_sampler_kwargs differ from the model's `sampler`, `num_inference_steps` and
    sampler_kwargs (a different sampler without val_sampler_kwargs runs with its defaults, not the model's
    sampler_kwargs); {} where they are the model's. One sentence naming the option if the formulation cannot sample
    with them."""
    val_sampler, val_steps = options.get("val_sampler"), options.get("val_num_inference_steps")
    check_range("DiffusionModule", "val_num_inference_steps", val_steps, 1)
    name, steps = val_sampler or sampler, num_inference_steps if val_steps is None else val_steps
    own = dict(options.get("sampler_kwargs") or {})
    val_kwargs = options.get("val_sampler_kwargs")
    kwargs = dict(val_kwargs) if val_kwargs is not None else own if name == sampler else {}
    if (name, steps, kwargs) == (sampler, num_inference_steps, own):
        return {}
    try:
        formulation.check_sampler(name, kwargs, steps)
    except ValueError as error:
        raise ValueError(
            f"DiffusionModule val_sampler={name!r}, val_num_inference_steps={steps}, val_sampler_kwargs={kwargs}: "
            f"{error}"
        ) from None
    return {"sampler": name, "num_inference_steps": steps, "sampler_kwargs": kwargs}
