"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) in the notation of Esser et al. 2024 (SD3):
x_t = (1 - t) x0 + t eps for t in [0, 1], the network predicts the velocity v = eps - x0, and sampling integrates
dx/dt = v(x, t) from t = 1 (noise) to t = 0 (data), or sampling DDPM's posterior on the same path (`ancestral`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SchedulerMixin
from torch import Tensor, nn

from lightning_diffusion.errors import check_range
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.formulations.base import Formulation, Net
from lightning_diffusion.formulations.ddpm import StepCallback

NETWORK_TIME = 1000.0  # the network sees 1000 t, the timesteps of diffusers' FlowMatch schedulers


def time_grid(num_steps: int, shift: float = 1.0) -> list[float]:
    """t from 1 to 0 in `num_steps` uniform steps, shifted towards noise by t' = shift t / (1 + (shift - 1) t)
    (Esser et al. 2024, eq. 23; shift 1: uniform)."""
    return [shift * t / (1 + (shift - 1) * t) for t in (1 - i / num_steps for i in range(num_steps + 1))]


def ode_sampler(
    velocity: Callable[[Tensor, float], Tensor],
    noise: Tensor,
    times: list[float],
    method: str = "euler",
    callback: StepCallback | None = None,
) -> Tensor:
    """Integrates dx/dt = v(x, t) over `times` (decreasing, 1 to 0) with Euler's method (1 evaluation per step),
    Heun's (the trapezoid of the two ends' velocities, 2; the last step 1) or the explicit midpoint rule (2)."""
    x = noise.float()
    for i, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=False)):
        dt = t_next - t
        v = velocity(x, t)
        x0 = x - t * v  # x_t - t v = x0, for the exact v
        if method == "euler":
            x = x + dt * v
        elif method == "heun" and t_next > 0:
            x = x + dt * (v + velocity(x + dt * v, t_next)) / 2
        elif method == "heun":  # the last step, to t = 0, is Euler's (as EDM's Heun and diffusers' FlowMatchHeun)
            x = x + dt * v
        else:  # midpoint
            x = x + dt * velocity(x + dt / 2 * v, t + dt / 2)
        if callback is not None:
            callback(i, torch.tensor(t_next), x, x0)
    return x


def ancestral_sampler(
    velocity: Callable[[Tensor, float], Tensor],
    noise: Tensor,
    times: list[float],
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """DDPM's ancestral sampling (Ho et al. 2020, Algorithm 2) on the straight path, in DDIM's form (Song et al.
    2021, eq. 12 and 16) for x_t = a_t x0 + sigma_t eps with a_t = 1 - t, sigma_t = t: from x0^ = x_t - t v and
    eps^ = x_t + (1 - t) v, each step to s < t draws

        x_s = (1 - s) x0^ + sqrt(s^2 - c^2) eps^ + c z,   c = eta s sqrt(1 - ((1 - t) s / ((1 - s) t))^2),

    where c at eta = 1 is the standard deviation of the posterior q(x_s | x_t, x0); eta = 0 is Euler's step
    x_t + (s - t) v. One network evaluation per step; the last step, to s = 0, returns x0^."""
    x = noise.float()
    for i, (t, s) in enumerate(zip(times[:-1], times[1:], strict=False)):
        v = velocity(x, t)
        x0, eps = x - t * v, x + (1 - t) * v
        c = eta * s * max(1 - ((1 - t) * s / ((1 - s) * t)) ** 2, 0.0) ** 0.5
        x = (1 - s) * x0 + (s**2 - c**2) ** 0.5 * eps
        if c > 0:
            x = x + c * torch.randn(x.shape, generator=generator).to(x.device)
        if callback is not None:
            callback(i, torch.tensor(s), x, x0)
    return x


@dataclass(frozen=True, kw_only=True)
class TimeShift:
    """Options of the `euler`, `heun` and `midpoint` samplers: the shift of their time grid (`time_grid`; 1: uniform
    in t; None: the formulation's `shift`)."""

    shift: float | None = None


@dataclass(frozen=True, kw_only=True)
class Ancestral(TimeShift):
    """Options of the `ancestral` sampler: its time grid's shift (as TimeShift) and eta (`ancestral_sampler`; 1:
    DDPM's posterior, 0: Euler's step)."""

    eta: float = 1.0


class FlowMatching(Formulation):
    """Conditional flow matching with the straight (rectified-flow) path between data and noise.

    Args:
        time_distribution: Training times: ``uniform`` on [0, 1] (Liu et al. 2023) or ``logit_normal``,
            t = sigmoid(m + s n) with n ~ N(0, 1), which trains the middle times most (Esser et al. 2024, sec. 3.1).
        logit_mean: m of the logit-normal times.
        logit_std: s of the logit-normal times.
        shift: Default time shift of the samplers (``sampler_kwargs: {shift: ...}`` overrides it per call).
    """

    own_samplers = {"euler": TimeShift, "heun": TimeShift, "midpoint": TimeShift, "ancestral": Ancestral}
    diffusers_samplers = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
    default_sampler = "euler"
    default_steps = 50

    def __init__(
        self,
        time_distribution: Literal["uniform", "logit_normal"] = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
    ) -> None:
        super().__init__()
        if time_distribution not in ("uniform", "logit_normal"):
            raise ValueError(f"time_distribution must be 'uniform' or 'logit_normal', got {time_distribution!r}.")
        check_range("FlowMatching", "logit_std", logit_std, 0, low_open=True)
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}.")
        self.time_distribution, self.logit_mean, self.logit_std, self.shift = (
            time_distribution,
            logit_mean,
            logit_std,
            shift,
        )

    def training_times(self, n: int, device: torch.device) -> Tensor:
        if self.time_distribution == "uniform":
            return torch.rand(n, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(n, device=device))

    def noise_level(self, time_input: Tensor) -> Tensor:
        t = time_input.float() / NETWORK_TIME
        return t / (1 - t)  # x_t / (1 - t) = x0 + t / (1 - t) eps

    def loss(self, denoiser: nn.Module, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        x0 = x0.float()
        t = self.training_times(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        t_ = diffusion.expand_like(t, x0)
        x_t = (1 - t_) * x0 + t_ * eps
        output = denoiser(x_t, NETWORK_TIME * t, class_labels).float()
        return (output - (eps - x0)).pow(2).flatten(1).mean(1).mean()

    # ------------------------------------------------------------ sampling

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
        if sampler in self.own_samplers:
            options = self.own_samplers[sampler](**sampler_kwargs)
            times = time_grid(num_inference_steps, float(self.shift if options.shift is None else options.shift))

            def velocity(x: Tensor, t: float) -> Tensor:
                return net(x, x.new_full((x.shape[0],), NETWORK_TIME * t)).float()

            if sampler == "ancestral":
                return ancestral_sampler(velocity, noise, times, options.eta, generator, callback)
            return ode_sampler(velocity, noise, times, sampler, callback)
        made = self.diffusers_sampler(sampler, sampler_kwargs, image_like)

        def to_x0(v: Tensor, x_t: Tensor, timestep: Tensor) -> Tensor:
            return x_t - timestep / NETWORK_TIME * v

        def to_t(i: int, timestep: Tensor, x: Tensor, x0: Tensor) -> None:  # the callback sees t in [0, 1]
            callback(i, timestep / NETWORK_TIME, x, x0)

        return diffusion.sample(net, made, noise, num_inference_steps, generator, to_t if callback else None, to_x0)

    def diffusers_config(self, cls: type[SchedulerMixin]) -> dict[str, Any]:
        return {"num_train_timesteps": int(NETWORK_TIME), "shift": self.shift}

    def diffusers_scheduler(self) -> SchedulerMixin:
        return FlowMatchEulerDiscreteScheduler(**self.diffusers_config(FlowMatchEulerDiscreteScheduler))

    # ------------------------------------------------------------ plots

    def progress(self, time: float) -> float:
        return float(time)

    def noised(self, x0: Tensor, eps: Tensor, progress: float) -> Tensor:
        return (1 - progress) * x0 + progress * eps
