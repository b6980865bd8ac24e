"""The math of denoising diffusion, pure torch, driven by a diffusers scheduler.

Notation of Ho et al. 2020 (DDPM): alpha_bar_t = prod_{s<=t} (1 - beta_s) and the forward process
q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I), i.e. x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.
Everything here runs in float32, whatever the autocast context of the denoiser.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PredictionType = Literal["epsilon", "sample", "v_prediction"]
LossWeighting = Literal["uniform", "min_snr"]
StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]  # (i, t, x_t, x0_pred)


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) so that it broadcasts against x."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def alpha_bar_at(alphas_cumprod: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """alpha_bar_t for integer timesteps t (B,), float32, shaped to broadcast against `like`."""
    return expand_like(alphas_cumprod.to(device=t.device, dtype=torch.float32)[t.long()], like)


def q_sample(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps  (eq. 4 of Ho et al. 2020)."""
    return alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps


def velocity(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor) -> Tensor:
    """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0  (Salimans & Ho 2022, sec. 4)."""
    return alpha_bar_t.sqrt() * eps - (1 - alpha_bar_t).sqrt() * x0


def training_target(x0: Tensor, eps: Tensor, alpha_bar_t: Tensor, prediction_type: PredictionType) -> Tensor:
    """What the denoiser learns to output: eps, x0 or v."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return velocity(x0, eps, alpha_bar_t)
    raise ValueError(f"Unknown prediction_type {prediction_type!r}: use 'epsilon', 'sample' or 'v_prediction'.")


def predict_x0(model_output: Tensor, x_t: Tensor, alpha_bar_t: Tensor, prediction_type: PredictionType) -> Tensor:
    """The denoiser's estimate of x0, whatever it predicts."""
    if prediction_type == "epsilon":  # x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
        return (x_t - (1 - alpha_bar_t).sqrt() * model_output) / alpha_bar_t.sqrt()
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":  # x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
        return alpha_bar_t.sqrt() * x_t - (1 - alpha_bar_t).sqrt() * model_output
    raise ValueError(f"Unknown prediction_type {prediction_type!r}: use 'epsilon', 'sample' or 'v_prediction'.")


def snr(alpha_bar_t: Tensor) -> Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021)."""
    return alpha_bar_t / (1 - alpha_bar_t)


def loss_weight(
    alpha_bar_t: Tensor, prediction_type: PredictionType, weighting: LossWeighting, min_snr_gamma: float = 5.0
) -> Tensor:
    """Per-sample weight of the MSE loss.

    Min-SNR-gamma (Hang et al. 2023, eq. 8) weighs the x0-loss by min(SNR, gamma); the same weighting of the
    eps-loss is min(SNR, gamma) / SNR = min(1, gamma / SNR) and of the v-loss min(SNR, gamma) / (SNR + 1).
    """
    if weighting == "uniform":
        return torch.ones_like(alpha_bar_t)
    if weighting != "min_snr":
        raise ValueError(f"Unknown loss weighting {weighting!r}: use 'uniform' or 'min_snr'.")
    snr_t = snr(alpha_bar_t)
    if prediction_type == "epsilon":
        return (min_snr_gamma / snr_t).clamp(max=1.0)  # also right at SNR = 0 (zero terminal SNR)
    clipped = snr_t.clamp(max=min_snr_gamma)
    return clipped if prediction_type == "sample" else clipped / (snr_t + 1)


def diffusion_loss(
    denoiser: nn.Module,
    x0: Tensor,
    alphas_cumprod: Tensor,
    prediction_type: PredictionType = "epsilon",
    weighting: LossWeighting = "uniform",
    min_snr_gamma: float = 5.0,
    class_labels: Optional[Tensor] = None,
    t: Optional[Tensor] = None,
    eps: Optional[Tensor] = None,
) -> Tensor:
    """The simple loss of Ho et al. 2020 (eq. 14), for any target and weighting, as a scalar.

    `t` defaults to uniform integer timesteps and `eps` to standard normal noise.
    """
    x0 = x0.float()
    if t is None:
        t = torch.randint(0, alphas_cumprod.numel(), (x0.shape[0],), device=x0.device)
    if eps is None:
        eps = torch.randn_like(x0)
    alpha_bar_t = alpha_bar_at(alphas_cumprod, t, x0)
    x_t = q_sample(x0, eps, alpha_bar_t)
    model_output = denoiser(x_t, t, class_labels).float()
    target = training_target(x0, eps, alpha_bar_t, prediction_type)
    per_sample = F.mse_loss(model_output, target, reduction="none").flatten(1).mean(1)  # (B,)
    return (loss_weight(alpha_bar_t.flatten(), prediction_type, weighting, min_snr_gamma) * per_sample).mean()


def guided_output(
    denoiser: nn.Module,
    x_t: Tensor,
    t: Tensor,
    class_labels: Optional[Tensor],
    guidance_scale: float,
    null_label: Optional[int],
) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): out_uncond + s (out_cond - out_uncond).

    s = 1 is the conditional model and s = 0 the unconditional one, each with a single forward pass.
    """
    t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
    if class_labels is None or guidance_scale == 1.0:
        return denoiser(x_t, t, class_labels)
    null = torch.full_like(class_labels, null_label)
    if guidance_scale == 0.0:
        return denoiser(x_t, t, null)
    cond, uncond = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([class_labels, null])).chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def sample(
    denoiser: nn.Module,
    sampler: Any,
    noise: Tensor,
    num_inference_steps: int,
    class_labels: Optional[Tensor] = None,
    guidance_scale: float = 1.0,
    null_label: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[StepCallback] = None,
) -> Tensor:
    """The reverse process x_T -> x_0, stepped by the `Sampler` that samplers.build_sampler made (a fresh one per call:
    diffusers schedulers keep per-call state). After each step, `callback(i, t, x_t, x0_pred)` receives the new
    sample and the current estimate of x0."""
    scheduler = sampler.scheduler
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    step_kwargs = {**sampler.step_kwargs, **({"generator": generator} if sampler.takes_generator else {})}
    prediction_type = scheduler.config.prediction_type
    x = noise.float() * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        model_output = guided_output(denoiser, x_in, t, class_labels, guidance_scale, null_label).float()
        step = scheduler.step(model_output, t, x, **step_kwargs)
        x = step.prev_sample
        if callback is not None:
            x0_pred = getattr(step, "pred_original_sample", None)
            if x0_pred is None:  # multistep solvers (DPM-Solver, UniPC) work on the VP sample: x_in == x_t
                alpha_bar_t = alpha_bar_at(scheduler.alphas_cumprod, t.reshape(1), x_in)
                x0_pred = predict_x0(model_output, x_in, alpha_bar_t, prediction_type)
            callback(i, t, x, x0_pred)
    return x
