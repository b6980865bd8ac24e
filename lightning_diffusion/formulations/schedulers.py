"""Building a sampler: a diffusers scheduler for the reverse process, from the training schedule's config.

This is the one place that decides how a sampler is configured; `diffusion.sample` only loops over its steps.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import diffusers
from diffusers import SchedulerMixin


class Sampler(NamedTuple):
    """A fresh diffusers scheduler (it keeps per-call state) and the fixed keyword arguments of its `step`."""

    scheduler: SchedulerMixin
    step_kwargs: dict[str, Any]
    takes_generator: bool  # stochastic samplers draw their noise from the call's generator


def sampler_class(name: str) -> type[SchedulerMixin]:
    """The diffusers scheduler class called `name`, or a one-sentence error."""
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(
            f"Unknown sampler {name!r}: use a diffusers scheduler class name such as DDPMScheduler, DDIMScheduler, "
            "DPMSolverMultistepScheduler, EulerDiscreteScheduler or UniPCMultistepScheduler."
        )
    return cls


def constructor_options(cls: type[SchedulerMixin]) -> list[str]:
    """The options of a diffusers scheduler: the arguments of its constructor."""
    return [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "kwargs")]


def keyword_options(sampler: Callable[..., Any]) -> list[str]:
    """The options of a sampler written here: the keyword-only arguments of its function (or of the dataclass
    that holds them)."""
    return [p.name for p in inspect.signature(sampler).parameters.values() if p.kind is p.KEYWORD_ONLY]


def check_options(options: dict[str, Any], accepted: Sequence[str], sampler: str) -> None:
    """One sentence naming the first of `options` that the sampler `sampler` does not take (diffusers drops unknown
    keys silently)."""
    unknown = sorted(set(options) - set(accepted))
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], accepted, n=1)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    others = f" (nor {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else ""
    raise ValueError(
        f"sampler_kwargs of {sampler} has no option {unknown[0]!r}{suggestion}{others}: "
        f"{sampler} takes {', '.join(accepted)}."
    )


def build_sampler(
    schedule_config: dict[str, Any],
    name: str,
    prediction_type: str,
    image_like: bool,
    overrides: dict[str, Any] | None = None,
) -> Sampler:
    """The sampler `name` over the training schedule (its betas and timesteps), for a model of `prediction_type`.

    Samplers keep the schedule's clipping of x0 to [-1, 1] (`clip_sample`, the image range): those without a
    `clip_sample` option (DPM-Solver, UniPC) get it as thresholding capped at 1, which is that clip (diffusers
    thresholds image-shaped samples only); DDIM steps with the eps of the clipped x0, or its x0 and x_t disagree
    (grey, noisy backgrounds). Unclipped, the x0 of an eps-model at high noise leaves the pixel range far behind.
    `overrides` (the config's `sampler_kwargs`) win over these choices; an option the sampler lacks is refused.
    """
    cls = sampler_class(name)
    options = constructor_options(cls)
    overrides = dict(overrides or {})
    check_options(overrides, options, name)
    clip = (
        schedule_config.get("clip_sample")
        and schedule_config.get("clip_sample_range", 1.0) == 1.0
        and "clip_sample" not in options
        and "thresholding" in options
        and image_like
    )
    kwargs = {"thresholding": True, "sample_max_value": 1.0} if clip else {}
    # A schedule built without some option records it as "defaulted", and from_config would give the sampler its
    # own default instead (Heun and KDPM2 have other betas than DDPM): every value of the schedule is meant.
    config = {k: v for k, v in dict(schedule_config).items() if k != "_use_default_values"}
    try:
        scheduler = cls.from_config(config, **{**kwargs, **overrides, "prediction_type": prediction_type})
    except (NotImplementedError, ValueError) as error:  # a value the sampler refuses, e.g. an unknown algorithm_type
        raise ValueError(f"{name} cannot be built with {overrides}: {error}") from None
    step_parameters = inspect.signature(scheduler.step).parameters
    step_kwargs = {}
    if "use_clipped_model_output" in step_parameters and (
        scheduler.config.get("clip_sample") or scheduler.config.get("thresholding")
    ):
        step_kwargs["use_clipped_model_output"] = True
    return Sampler(scheduler, step_kwargs, "generator" in step_parameters)
