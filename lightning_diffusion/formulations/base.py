"""What a formulation is: how training turns data into noisy inputs and targets, and how sampling turns noise
back into data. DiffusionModule holds one and never asks which."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from diffusers import SchedulerMixin
from torch import Tensor, nn

from lightning_diffusion.formulations.ddpm import StepCallback
from lightning_diffusion.formulations.schedulers import (
    Sampler,
    check_options,
    constructor_options,
    keyword_options,
    sampler_class,
)

# The guided denoiser at the formulation's network time: net(x_in, time_input) -> network output.
Net = Callable[[Tensor, Tensor], Tensor]


class Formulation(nn.Module):
    """Base class of the formulations (VP, EDM, FlowMatching): a module, so that what it learns from the data
    (EDM's sigma_data) is a buffer saved with the checkpoint.

    The denoiser sees the formulation's `network input` and `network time`; the callback of `sample` sees the
    formulation's own time of the new sample (VP: the integer timestep, EDM: sigma, flow matching: t in [0, 1]),
    and `progress` maps that time to [0, 1] (data to noise) for plots.
    """

    # samplers written here from the papers' formulas: name -> the function or dataclass whose keyword-only
    # arguments are its options
    own_samplers: ClassVar[dict[str, Callable[..., Any]]] = {}
    diffusers_samplers: ClassVar[tuple[str, ...]] = ()  # the diffusers schedulers that fit this formulation
    default_sampler: ClassVar[str]
    default_steps: ClassVar[int]

    def loss(self, denoiser: nn.Module, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The training loss of a batch, a scalar, with its times and noise drawn from the global random streams."""
        raise NotImplementedError

    def sample(
        self,
        net: Net,
        noise: Tensor,
        sampler: str,
        num_inference_steps: int,
        sampler_kwargs: dict[str, Any],
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        image_like: bool = False,
    ) -> Tensor:
        """x_0 from standard normal `noise` with the sampler `sampler` in `num_inference_steps` steps."""
        raise NotImplementedError

    def check_sampler(self, sampler: str, sampler_kwargs: dict[str, Any], num_inference_steps: int) -> None:
        """One sentence if this formulation cannot sample with these choices."""
        samplers = [*self.own_samplers, *self.diffusers_samplers]
        if sampler not in samplers:
            raise ValueError(
                f"{type(self).__name__} samples with {', '.join(samplers)}; {sampler!r} is not one of them: choose "
                "one with --model.sampler."
            )
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be positive, got {num_inference_steps}.")
        if sampler in self.own_samplers:
            check_options(sampler_kwargs, keyword_options(self.own_samplers[sampler]), sampler)
        else:
            self.diffusers_sampler(sampler, sampler_kwargs, image_like=False)  # unknown options are refused there

    def diffusers_sampler(self, name: str, sampler_kwargs: dict[str, Any], image_like: bool) -> Sampler:
        """A fresh diffusers scheduler for this formulation, its options split between its config and its step."""
        cls = sampler_class(name)
        step_parameters = inspect.signature(cls.step).parameters
        not_options = ("self", "model_output", "timestep", "sample", "generator", "return_dict", "pred_original_sample")
        step_options = [k for k in step_parameters if k not in not_options]
        check_options(sampler_kwargs, constructor_options(cls) + step_options, name)
        step_kwargs = {k: v for k, v in sampler_kwargs.items() if k in step_options}
        config = {k: v for k, v in sampler_kwargs.items() if k not in step_kwargs}
        scheduler = cls(**{**self.diffusers_config(cls), **config})
        return Sampler(scheduler, step_kwargs, "generator" in step_parameters)

    def diffusers_config(self, cls: type[SchedulerMixin]) -> dict[str, Any]:
        """The config that makes the diffusers scheduler `cls` sample this formulation's trained model."""
        raise NotImplementedError

    def diffusers_scheduler(self) -> SchedulerMixin:
        """The diffusers scheduler that export writes beside the network."""
        raise NotImplementedError

    def noise_level(self, time_input: Tensor) -> Tensor:
        """The noise level sigma (x_t = x0 + sigma eps up to a scale) at the network time `time_input` the denoiser
        sees: the common axis of the guidance interval."""
        raise NotImplementedError

    def calibrate(self, data: Callable[[], Tensor]) -> None:
        """Learn what the formulation needs from the training data (in model space), once, before training."""

    def progress(self, time: float) -> float:
        """How far `time` (the formulation's own, as the sampling callback sees it) is from data (0) to noise (1)."""
        raise NotImplementedError

    def noised(self, x0: Tensor, eps: Tensor, progress: float) -> Tensor:
        """The forward process at `progress` in [0, 1] (for plots), in the space the samples live in."""
        raise NotImplementedError

    def display(self, x: Tensor, progress: float) -> Tensor:
        """`x` at `progress` scaled for a plot that shares axes across noise levels (default: as it is)."""
        return x
