"""The variance-preserving formulation of DDPM (Ho et al. 2020) over any diffusers schedule with alphas_cumprod:
integer timesteps, an eps, x0 or v target, every diffusers DDPM-family sampler, and DDPM's and DDIM's own steps
written from the papers (`ddpm`, `ddim`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDPMScheduler, SchedulerMixin
from torch import Tensor, nn

from lightning_diffusion.errors import check_range
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.formulations.base import Formulation, Net
from lightning_diffusion.formulations.ddpm import LossWeighting, PredictionType, StepCallback
from lightning_diffusion.formulations.schedulers import build_sampler, sampler_class


@dataclass(frozen=True, kw_only=True)
class DDPMOptions:
    """Options of the `ddpm` sampler: the spacing of a shorter process's timesteps and the variance, `fixed_small`
    (beta~_t) or `fixed_large` (beta_t); by default the schedule's."""

    timestep_spacing: str | None = None
    variance_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class DDIMOptions:
    """Options of the `ddim` sampler: eta (Song et al. 2021, eq. 16; 0: deterministic DDIM, 1: DDPM-like) and the
    spacing of the timesteps (by default the schedule's)."""

    eta: float = 0.0
    timestep_spacing: str | None = None


class VP(Formulation):
    """DDPM's variance-preserving process x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

    Args:
        scheduler: The noise schedule (a diffusers scheduler with ``alphas_cumprod``, e.g. DDPMScheduler); its own
            ``prediction_type`` is ignored in favour of this one's.
        prediction_type: The training target: ``epsilon`` (Ho et al. 2020), ``sample`` (x0) or ``v_prediction``
            (Salimans & Ho 2022).
        loss_weighting: ``uniform`` (the simple loss) or ``min_snr`` (Hang et al. 2023).
        min_snr_gamma: The gamma of min-SNR weighting.
    """

    own_samplers = {"ddpm": DDPMOptions, "ddim": DDIMOptions}
    default_sampler = "DDPMScheduler"
    default_steps = 1000

    def __init__(
        self,
        scheduler: SchedulerMixin,
        prediction_type: PredictionType = "epsilon",
        loss_weighting: LossWeighting = "uniform",
        min_snr_gamma: float = 5.0,
    ) -> None:
        super().__init__()
        check_range("VP", "min_snr_gamma", min_snr_gamma, 0, low_open=True)
        if getattr(scheduler, "alphas_cumprod", None) is None:
            raise ValueError(
                f"The training scheduler {type(scheduler).__name__} has no alphas_cumprod: use a DDPM-family "
                "scheduler such as DDPMScheduler for training and choose the sampler with `sampler`."
            )
        if prediction_type == "epsilon" and float(scheduler.alphas_cumprod[-1]) == 0.0:
            # x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) divides by zero at the last timestep
            raise ValueError(
                "A schedule with zero terminal SNR (rescale_betas_zero_snr: true) cannot be sampled from an epsilon "
                "model (x0 from eps divides by sqrt(alpha_bar_T) = 0): use prediction_type v_prediction or sample."
            )
        self.scheduler = scheduler
        self.prediction_type = prediction_type
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = min_snr_gamma
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.float().clone(), persistent=False)

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def loss(self, denoiser: nn.Module, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return diffusion.diffusion_loss(
            denoiser,
            x0,
            self.alphas_cumprod,
            self.prediction_type,
            self.loss_weighting,
            self.min_snr_gamma,
            class_labels=class_labels,
        )

    # ------------------------------------------------------------ sampling

    def noise_level(self, time_input: Tensor) -> Tensor:
        """sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t), x_t / sqrt(alpha_bar_t) = x0 + sigma eps; between integer
        timesteps (Karras-sigma samplers) interpolated in log sigma, as diffusers maps sigmas to timesteps."""
        log_sigma = ((1 - self.alphas_cumprod) / self.alphas_cumprod).log().mul(0.5).to(time_input.device)
        t = time_input.float().clamp(0, len(log_sigma) - 1)
        low = t.floor().long()
        high = (low + 1).clamp(max=len(log_sigma) - 1)
        return torch.lerp(log_sigma[low], log_sigma[high], t - low).exp()

    def check_sampler(self, sampler: str, sampler_kwargs: dict[str, Any], num_inference_steps: int) -> None:
        if sampler not in self.own_samplers:
            sampler_class(sampler)  # an unknown name is one sentence
        if not 0 < num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.num_train_timesteps}], got {num_inference_steps}."
            )
        if sampler in self.own_samplers:
            super().check_sampler(sampler, sampler_kwargs, num_inference_steps)
            return
        made = self.make_sampler(sampler, sampler_kwargs, image_like=False)
        try:  # the step loop on one number: its timesteps and indexing, not a model (milliseconds)
            diffusion.sample(lambda x, t: torch.zeros_like(x), made, torch.zeros(1, 1), num_inference_steps)
        except (IndexError, RuntimeError) as error:
            options = sampler_kwargs or "its defaults"
            raise ValueError(
                f"{sampler} cannot take {num_inference_steps} steps over this schedule with {options} (diffusers: "
                f"{type(error).__name__}: {error}): choose other steps or sampler_kwargs (e.g. without "
                "use_karras_sigmas), or another sampler."
            ) from None

    def make_sampler(self, name: str, sampler_kwargs: dict[str, Any] | None, image_like: bool):
        """A diffusers sampler over this schedule: see samplers.build_sampler."""
        return build_sampler(self.scheduler.config, name, self.prediction_type, image_like, sampler_kwargs)

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
            return self.sample_from_formulas(net, noise, sampler, num_inference_steps, options, generator, callback)
        made = self.make_sampler(sampler, sampler_kwargs, image_like)
        return diffusion.sample(net, made, noise, num_inference_steps, generator, callback)

    def sample_from_formulas(
        self,
        net: Net,
        noise: Tensor,
        sampler: str,
        num_inference_steps: int,
        options: DDPMOptions | DDIMOptions,
        generator: torch.Generator | None,
        callback: StepCallback | None,
    ) -> Tensor:
        """DDPM's ancestral sampling (Ho et al. 2020, Algorithm 2) or DDIM (Song et al. 2021) from diffusion.py's
        steps, on the timesteps diffusers would use, with the schedule's x0 clip: the reference the tests hold
        diffusers' DDPMScheduler and DDIMScheduler to."""
        config = self.scheduler.config
        spacing = options.timestep_spacing or config.get("timestep_spacing", "leading")
        timesteps = diffusion.inference_timesteps(
            self.num_train_timesteps, num_inference_steps, spacing, config.get("steps_offset", 0)
        )
        clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample") else None
        a = self.alphas_cumprod.to(noise.device)
        # DDIM steps T // n back (and to alpha_bar = 1, set_alpha_to_one, past t = 0); DDPM to the next timestep
        final = a.new_tensor(1.0) if config.get("set_alpha_to_one", True) or sampler == "ddpm" else a[0]
        x = noise.float()
        for i, t in enumerate(timesteps):
            if sampler == "ddpm":
                prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            else:
                prev = t - self.num_train_timesteps // num_inference_steps
            alpha_bar_t, alpha_bar_prev = a[t], (a[prev] if prev >= 0 else final)
            model_output = net(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)).float()
            if sampler == "ddpm":
                z = torch.randn(x.shape, generator=generator).to(x.device) if t > 0 else None
                large = (options.variance_type or config.get("variance_type")) == "fixed_large"
                x, x0 = diffusion.ddpm_step(
                    model_output, x, alpha_bar_t, alpha_bar_prev, self.prediction_type, z, clip, large
                )
            else:
                eta = float(options.eta)
                z = torch.randn(x.shape, generator=generator).to(x.device) if eta > 0 else None
                x, x0 = diffusion.ddim_step(
                    model_output, x, alpha_bar_t, alpha_bar_prev, self.prediction_type, z, eta, clip
                )
            if callback is not None:
                callback(i, torch.tensor(max(prev, 0)), x, x0)
        return x

    # ------------------------------------------------------------ export, plots

    def diffusers_scheduler(self) -> SchedulerMixin:
        return DDPMScheduler.from_config(self.scheduler.config, prediction_type=self.prediction_type)

    def progress(self, time: float) -> float:
        return float(time) / self.num_train_timesteps

    def noised(self, x0: Tensor, eps: Tensor, progress: float) -> Tensor:
        t = min(int(round(progress * self.num_train_timesteps)), self.num_train_timesteps - 1)
        alpha_bar_t = diffusion.alpha_bar_at(self.alphas_cumprod, torch.full((len(x0),), t, device=x0.device), x0)
        return diffusion.q_sample(x0, eps, alpha_bar_t)
