"""The math of denoising diffusion, pure torch, driven by a diffusers scheduler.

Notation of Ho et al. 2020 (DDPM): alpha_bar_t = prod_{s<=t} (1 - beta_s) and the forward process
q(x_t | x0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I), i.e. x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.
Everything here runs in float32, whatever the autocast context of the denoiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PredictionType = Literal["epsilon", "sample", "v_prediction"]
LossWeighting = Literal["uniform", "min_snr"]
StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]  # (i, t, x_t, x0_pred): x_t after step i, at time t


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
    class_labels: Tensor | None = None,
    t: Tensor | None = None,
    eps: Tensor | None = None,
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
    class_labels: Tensor | None,
    guidance_scale: float,
    null_label: int | None,
    guide: nn.Module | None = None,
    inside: Tensor | None = None,
) -> Tensor:
    """Guidance: out_weak + w (out_main - out_weak), where the weak output is the unconditional model's
    (classifier-free guidance, Ho & Salimans 2022, eq. 6) or, given a `guide` network, the guide's at the same
    labels (autoguidance, Karras et al. 2024: their eq. 1 with a weaker model as D_0).

    w = 1 is the model alone and, without a guide, w = 0 the unconditional one. `inside` (one bool per sample) limits
    guidance to the samples whose noise level lies in the guidance interval (Kynkäänniemi et al. 2024); the others
    get the model's output alone, and a batch with none inside costs one network evaluation instead of two.
    """
    t = t.expand(x_t.shape[0]) if t.ndim == 0 else t
    weakened = guide is not None or class_labels is not None
    if not weakened or guidance_scale == 1.0 or (inside is not None and not bool(inside.any())):
        return denoiser(x_t, t, class_labels)
    if guide is not None:
        main, weak = denoiser(x_t, t, class_labels), guide(x_t, t, class_labels)
    else:
        null = torch.full_like(class_labels, null_label)
        if guidance_scale == 0.0 and inside is None:
            return denoiser(x_t, t, null)
        main, weak = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([class_labels, null])).chunk(2)
    guided = weak + guidance_scale * (main - weak)
    return guided if inside is None else torch.where(expand_like(inside, guided), guided, main)


def in_interval(sigma: Tensor, interval: tuple[float, float]) -> Tensor:
    """Whether each noise level lies in the closed guidance interval [sigma_lo, sigma_hi]."""
    return (sigma >= interval[0]) & (sigma <= interval[1])


def predict_eps(model_output: Tensor, x_t: Tensor, alpha_bar_t: Tensor, prediction_type: PredictionType) -> Tensor:
    """The denoiser's estimate of eps, whatever it predicts (x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps)."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":  # eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t
        return alpha_bar_t.sqrt() * model_output + (1 - alpha_bar_t).sqrt() * x_t
    x0 = predict_x0(model_output, x_t, alpha_bar_t, prediction_type)
    return (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()


# ---------------------------------------------------------------- the reverse process, from the formulas


def inference_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str = "leading", offset: int = 0
) -> list[int]:
    """The timesteps of a shorter reverse process, decreasing, spaced as Lin et al. 2024 (Table 2) name it."""
    T, n = num_train_timesteps, num_inference_steps
    if spacing == "leading":
        steps = [i * (T // n) + offset for i in range(n)]
    elif spacing == "trailing":
        steps = [round(T - i * T / n) - 1 for i in range(n)][::-1]
    elif spacing == "linspace":
        steps = torch.linspace(0, T - 1, n, dtype=torch.float64).round().long().tolist()
    else:
        raise ValueError(f"Unknown timestep_spacing {spacing!r}: use 'leading', 'trailing' or 'linspace'.")
    return steps[::-1]


def ddpm_step(
    model_output: Tensor,
    x_t: Tensor,
    alpha_bar_t: Tensor,
    alpha_bar_prev: Tensor,
    prediction_type: PredictionType,
    noise: Tensor | None,
    clip: float | None = None,
    large_variance: bool = False,
) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t-1} of Ho et al. 2020 and the x0 estimate it used.

    The mean is that of the posterior q(x_{t-1} | x_t, x0) (their eq. 7) at the predicted x0, which for an
    unclipped eps-model is their eq. 11, 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps); it also lets x0
    be clipped. sigma_t^2 is the posterior's beta~_t, or beta_t with `large_variance` (both in their sec. 3.2).
    Between two timesteps of a shorter process, alpha_t = alpha_bar_t / alpha_bar_prev.
    """
    x0 = predict_x0(model_output, x_t, alpha_bar_t, prediction_type)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1 - alpha_t
    # the posterior mean's coefficients first: x0 of an eps-model is huge at high noise, so the order counts
    coef_x0 = alpha_bar_prev.sqrt() * beta_t / (1 - alpha_bar_t)
    coef_xt = alpha_t.sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    mean = coef_x0 * x0 + coef_xt * x_t
    if noise is None:  # the last step, to t = 0, adds no noise
        return mean, x0
    variance = beta_t if large_variance else ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t).clamp(min=1e-20)
    return mean + variance.sqrt() * noise, x0


def ddim_step(
    model_output: Tensor,
    x_t: Tensor,
    alpha_bar_t: Tensor,
    alpha_bar_prev: Tensor,
    prediction_type: PredictionType,
    noise: Tensor | None = None,
    eta: float = 0.0,
    clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One step of Song et al. 2021 (eq. 12) and the x0 estimate it used:
    x_prev = sqrt(alpha_bar_prev) x0 + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z, with
    sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev) (their eq. 16).
    A clipped x0 comes with the eps that agrees with it, so that x0, eps and x_t stay one consistent triple."""
    x0 = predict_x0(model_output, x_t, alpha_bar_t, prediction_type)
    eps = predict_eps(model_output, x_t, alpha_bar_t, prediction_type)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
        eps = (x_t - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
    x_prev = alpha_bar_prev.sqrt() * x0 + (1 - alpha_bar_prev - sigma**2).sqrt() * eps
    if eta > 0 and noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev, x0


@torch.no_grad()
def sample(
    net: Callable[[Tensor, Tensor], Tensor],
    sampler: Any,
    noise: Tensor,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    to_x0: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    end_time: float = 0.0,
) -> Tensor:
    """The reverse process x_T -> x_0 of a diffusers scheduler: the `Sampler` that samplers.build_sampler (or a
    formulation) made, fresh per call (diffusers schedulers keep per-call state). `net(x_in, t)` is the (guided)
    denoiser at the scheduler's timestep t. After each step, `callback(i, t, x_t, x0_pred)` receives the new sample,
    the timestep it is at (the next one; `end_time` after the last step) and the estimate of x0: the scheduler's own,
    or `to_x0(model_output, x_in, t)` where it gives none (by default, that of a VP schedule)."""
    scheduler = sampler.scheduler
    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    step_kwargs = {**sampler.step_kwargs, **({"generator": generator} if sampler.takes_generator else {})}
    x = noise.float() * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching starts at unit noise
    scale = getattr(scheduler, "scale_model_input", None)
    timesteps = scheduler.timesteps
    for i, t in enumerate(timesteps):
        x_in = scale(x, t) if scale is not None else x
        model_output = net(x_in, t.expand(x.shape[0])).float()
        step = scheduler.step(model_output, t, x, **step_kwargs)
        x = step.prev_sample
        if callback is not None:
            x0_pred = getattr(step, "pred_original_sample", None)
            if x0_pred is None and to_x0 is not None:
                x0_pred = to_x0(model_output, x_in, t)
            elif x0_pred is None:  # a VP multistep solver (DPM-Solver, UniPC) steps the VP sample: x_in == x_t
                alpha_bar_t = alpha_bar_at(scheduler.alphas_cumprod, t.reshape(1), x_in)
                x0_pred = predict_x0(model_output, x_in, alpha_bar_t, scheduler.config.prediction_type)
            callback(i, timesteps[i + 1] if i + 1 < len(timesteps) else timesteps.new_tensor(end_time), x, x0_pred)
    return x
