"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"): x = x0 + sigma n,
the denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) around the network F (their Table 1 and eq. 7),
log-normal training sigmas, and their deterministic Heun sampler with its stochastic variant (Algorithm 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from diffusers import EDMEulerScheduler, SchedulerMixin
from torch import Tensor, nn

from lightning_diffusion.errors import check_range
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.formulations.base import Formulation, Net
from lightning_diffusion.formulations.ddpm import StepCallback


def preconditioning(sigma: Tensor, sigma_data: Tensor | float) -> dict[str, Tensor]:
    """c_skip, c_out, c_in, c_noise and the loss weight lambda of Table 1 (EDM column), for noise levels sigma."""
    total = sigma**2 + sigma_data**2
    return {
        "c_skip": sigma_data**2 / total,
        "c_out": sigma * sigma_data / total.sqrt(),
        "c_in": 1 / total.sqrt(),
        "c_noise": sigma.log() / 4,
        "weight": total / (sigma * sigma_data) ** 2,
    }


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0 (eq. 5)."""
    ramp = (
        torch.linspace(0, 1, num_steps, dtype=torch.float64) if num_steps > 1 else torch.zeros(1, dtype=torch.float64)
    )
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def edm_sampler(
    denoise: Callable[[Tensor, Tensor], Tensor],
    noise: Tensor,
    sigmas: Tensor,
    heun: bool = True,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = float("inf"),
    S_noise: float = 1.0,
) -> Tensor:
    """Algorithm 2 of Karras et al. 2022 (with S_churn = 0 their deterministic Algorithm 1): Euler steps of the
    probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma, each corrected by Heun's second-order rule unless it
    lands on sigma = 0; before each step, S_churn adds noise that raises sigma_i to sigma_hat = (1 + gamma) sigma_i.
    The keyword-only arguments are the options (`sampler_kwargs`) of the `heun` and `euler` samplers."""
    n = len(sigmas) - 1
    levels = sigmas.tolist()  # the control flow on the host: no device sync per step
    x = noise.float() * levels[0]
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        gamma = min(S_churn / n, math.sqrt(2) - 1) if S_tmin <= sigma <= S_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            z = torch.randn(x.shape, generator=generator).to(x.device)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * S_noise * z
        x0 = denoise(x, x.new_tensor(sigma_hat))
        d = (x - x0) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if heun and sigma_next > 0:
            x0 = denoise(x_next, x.new_tensor(sigma_next))
            x_next = x + (sigma_next - sigma_hat) * (d + (x_next - x0) / sigma_next) / 2
        x = x_next
        if callback is not None:
            callback(i, torch.tensor(sigma_next), x, x0)
    return x


class EDM(Formulation):
    """Karras et al. 2022's formulation, with the same denoisers as the network F.

    The network sees c_in x and c_noise = ln(sigma) / 4 and is trained with the loss weight lambda(sigma) =
    1 / c_out^2 on D, i.e. an unweighted MSE of F against (x0 - c_skip x) / c_out. A Heun step evaluates the
    network twice (the last one, to sigma = 0, once): N steps are 2N - 1 function evaluations.

    Args:
        sigma_data: Standard deviation of the data in model space (``null``: measured on the training set before
            the first step and saved with the checkpoint).
        P_mean: Mean of ln(sigma) in training (log-normal sigmas).
        P_std: Standard deviation of ln(sigma) in training.
        sigma_min: Smallest sigma of sampling.
        sigma_max: Largest sigma of sampling (x_T = sigma_max * noise).
        rho: Exponent of the sampling sigmas' spacing (eq. 5).
    """

    own_samplers = {"heun": edm_sampler, "euler": edm_sampler}
    diffusers_samplers = ("EDMEulerScheduler", "EDMDPMSolverMultistepScheduler")
    default_sampler = "heun"
    default_steps = 18

    def __init__(
        self,
        sigma_data: float | None = None,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
    ) -> None:
        super().__init__()
        if sigma_data is not None and sigma_data <= 0:
            raise ValueError(f"sigma_data must be positive (or null to measure it), got {sigma_data}.")
        check_range("EDM", "P_std", P_std, 0, low_open=True)
        check_range("EDM", "rho", rho, 0, low_open=True)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"EDM needs 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}.")
        self.P_mean, self.P_std, self.sigma_min, self.sigma_max, self.rho = P_mean, P_std, sigma_min, sigma_max, rho
        self.register_buffer("sigma_data", torch.tensor(float("nan") if sigma_data is None else float(sigma_data)))

    def noise_level(self, time_input: Tensor) -> Tensor:
        return (4 * time_input.float()).exp()  # c_noise = ln(sigma) / 4 (eq. 7)

    def calibrate(self, data: Callable[[], Tensor]) -> None:
        if torch.isnan(self.sigma_data):
            self.sigma_data.fill_(float(data().float().std()))

    def denoise(self, net: Net, x: Tensor, sigma: Tensor) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) (eq. 7), for one sigma or one per sample."""
        sigma = diffusion.expand_like(sigma.float().expand(x.shape[0]), x)
        c = preconditioning(sigma, self.sigma_data)
        return c["c_skip"] * x + c["c_out"] * net(c["c_in"] * x, c["c_noise"].flatten()).float()

    def loss(self, denoiser: nn.Module, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        x0 = x0.float()
        ln_sigma = torch.randn(x0.shape[0], device=x0.device)
        n = torch.randn_like(x0)
        sigma = diffusion.expand_like((ln_sigma * self.P_std + self.P_mean).exp(), x0)
        c = preconditioning(sigma, self.sigma_data)
        x = x0 + sigma * n
        output = denoiser(c["c_in"] * x, c["c_noise"].flatten(), class_labels).float()
        # lambda |D - x0|^2 = lambda c_out^2 |F - target|^2, and lambda c_out^2 = 1
        target = (x0 - c["c_skip"] * x) / c["c_out"]
        return (output - target).pow(2).flatten(1).mean(1).mean()

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
        if torch.isnan(self.sigma_data):  # one host sync per call
            raise ValueError(
                "EDM's sigma_data is not known yet (it is measured when the fit starts): fit the model first, or give "
                "sigma_data."
            )
        if sampler in self.own_samplers:
            sigmas = karras_sigmas(num_inference_steps, self.sigma_min, self.sigma_max, self.rho)
            return edm_sampler(
                lambda x, s: self.denoise(net, x, s),
                noise,
                sigmas,
                heun=sampler == "heun",
                generator=generator,
                callback=callback,
                **sampler_kwargs,
            )
        made = self.diffusers_sampler(sampler, sampler_kwargs, image_like)

        def to_x0(model_output: Tensor, x_in: Tensor, c_noise: Tensor) -> Tensor:
            sigma = (4 * c_noise).exp()
            c = preconditioning(sigma, self.sigma_data)
            return c["c_skip"] * x_in / c["c_in"] + c["c_out"] * model_output

        def to_sigma(i: int, c_noise: Tensor, x: Tensor, x0: Tensor) -> None:  # the callback sees sigma
            callback(i, (4 * c_noise).exp(), x, x0)

        return diffusion.sample(
            net,
            made,
            noise,
            num_inference_steps,
            generator,
            to_sigma if callback else None,
            to_x0,
            end_time=float("-inf"),
        )  # c_noise of sigma = 0

    def diffusers_config(self, cls: type[SchedulerMixin]) -> dict[str, Any]:
        # diffusers' EDM schedulers call their F-parametrization "epsilon" (precondition_outputs)
        return {
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "sigma_data": float(self.sigma_data),
            "rho": self.rho,
            "prediction_type": "epsilon",
        }

    def diffusers_scheduler(self) -> SchedulerMixin:
        return EDMEulerScheduler(**self.diffusers_config(EDMEulerScheduler))

    # ------------------------------------------------------------ plots

    def progress(self, time: float) -> float:
        """sigma's place on the sampling ramp of eq. 5 (0 at sigma_min, 1 at sigma_max); 0 for sigma = 0."""
        sigma = float(time)
        if sigma <= self.sigma_min:
            return 0.0
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return min((sigma ** (1 / self.rho) - lo) / (hi - lo), 1.0)

    def sigma_at(self, progress: float) -> float:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (lo + progress * (hi - lo)) ** self.rho if progress > 0 else 0.0

    def noised(self, x0: Tensor, eps: Tensor, progress: float) -> Tensor:
        return x0 + self.sigma_at(progress) * eps

    def display(self, x: Tensor, progress: float) -> Tensor:
        """x / sqrt(1 + sigma^2): the variance-preserving view of the same process (Karras et al. 2022, eq. 4)."""
        return x / (1 + self.sigma_at(progress) ** 2) ** 0.5
