"""Numerical properties of the forward process, the targets and the reverse loop."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from helpers.fakes import PointMassOracle

from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.formulations.schedulers import build_sampler


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_forward_process_moments(scheduler, t):
    """q(x_t | x0) has mean sqrt(alpha_bar) x0 and variance 1 - alpha_bar."""
    torch.manual_seed(0)
    n, d = 200_000, 2
    x0 = torch.tensor([1.5, -0.5]).expand(n, d)
    ts = torch.full((n,), t)
    alpha_bar = diffusion.alpha_bar_at(scheduler.alphas_cumprod, ts, x0)
    x_t = diffusion.q_sample(x0, torch.randn(n, d), alpha_bar)
    a = scheduler.alphas_cumprod[t].item()
    assert torch.allclose(x_t.mean(0), math.sqrt(a) * x0[0], atol=0.01)
    assert torch.allclose(x_t.var(0), torch.full((d,), 1 - a), atol=0.01)


def test_forward_process_norm(scheduler):
    """E||x_t||^2 = alpha_bar ||x0||^2 + (1 - alpha_bar) d."""
    torch.manual_seed(1)
    n, d = 50_000, 16
    x0 = torch.randn(n, d) * 0.7 + 0.3
    for t in [10, 300, 900]:
        alpha_bar = diffusion.alpha_bar_at(scheduler.alphas_cumprod, torch.full((n,), t), x0)
        x_t = diffusion.q_sample(x0, torch.randn(n, d), alpha_bar)
        a = scheduler.alphas_cumprod[t].item()
        expected = a * x0.pow(2).sum(1).mean() + (1 - a) * d
        assert x_t.pow(2).sum(1).mean().item() == pytest.approx(expected.item(), rel=0.01)


def test_matches_diffusers_add_noise_and_velocity(scheduler):
    torch.manual_seed(2)
    x0, eps = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    t = torch.randint(0, 1000, (8,))
    alpha_bar = diffusion.alpha_bar_at(scheduler.alphas_cumprod, t, x0)
    assert torch.allclose(diffusion.q_sample(x0, eps, alpha_bar), scheduler.add_noise(x0, eps, t), atol=1e-6)
    assert torch.allclose(diffusion.velocity(x0, eps, alpha_bar), scheduler.get_velocity(x0, eps, t), atol=1e-6)


def test_v_prediction_identities(scheduler):
    """v = sqrt(a) eps - sqrt(1-a) x0; x0 = sqrt(a) x_t - sqrt(1-a) v; eps = sqrt(1-a) x_t + sqrt(a) v."""
    torch.manual_seed(3)
    x0, eps = torch.randn(64, 2), torch.randn(64, 2)
    alpha_bar = diffusion.alpha_bar_at(scheduler.alphas_cumprod, torch.randint(0, 1000, (64,)), x0)
    x_t = diffusion.q_sample(x0, eps, alpha_bar)
    v = diffusion.velocity(x0, eps, alpha_bar)
    assert torch.allclose(alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v, x0, atol=1e-5)
    assert torch.allclose((1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * v, eps, atol=1e-5)
    for prediction_type, output in [("epsilon", eps), ("sample", x0), ("v_prediction", v)]:
        assert torch.allclose(diffusion.training_target(x0, eps, alpha_bar, prediction_type), output)
        assert torch.allclose(diffusion.predict_x0(output, x_t, alpha_bar, prediction_type), x0, atol=1e-4)


def test_min_snr_weights(scheduler):
    alpha_bar = scheduler.alphas_cumprod[torch.tensor([0, 200, 999])]
    snr = alpha_bar / (1 - alpha_bar)
    gamma = 5.0
    w_x0 = diffusion.loss_weight(alpha_bar, "sample", "min_snr", gamma)
    assert torch.allclose(w_x0, torch.minimum(snr, torch.tensor(gamma)))
    assert torch.allclose(diffusion.loss_weight(alpha_bar, "epsilon", "min_snr", gamma), w_x0 / snr)
    assert torch.allclose(diffusion.loss_weight(alpha_bar, "v_prediction", "min_snr", gamma), w_x0 / (snr + 1))
    assert torch.equal(diffusion.loss_weight(alpha_bar, "epsilon", "uniform"), torch.ones(3))
    # zero terminal SNR: the eps weight tends to 1, not NaN
    assert diffusion.loss_weight(torch.tensor([0.0]), "epsilon", "min_snr", gamma).item() == 1.0


class _Recorder(torch.nn.Module):
    """Output depends on the label so that guidance is visible: out = x + label."""

    def forward(self, x, t, class_labels=None):
        assert t.shape == (x.shape[0],)
        return x + (0 if class_labels is None else class_labels.float().view(-1, 1))


def test_guidance_reduces_exactly():
    x, t = torch.randn(4, 2), torch.tensor(10)
    labels, null = torch.tensor([0, 1, 0, 1]), 2
    cond = _Recorder()(x, t.expand(4), labels)
    uncond = _Recorder()(x, t.expand(4), torch.full_like(labels, null))
    assert torch.equal(diffusion.guided_output(_Recorder(), x, t, labels, 1.0, null), cond)
    assert torch.equal(diffusion.guided_output(_Recorder(), x, t, labels, 0.0, null), uncond)
    guided = diffusion.guided_output(_Recorder(), x, t, labels, 3.0, null)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond))


@pytest.mark.parametrize(
    "name",
    [
        "DDPMScheduler",
        "DDIMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "UniPCMultistepScheduler",
    ],
)
def test_reverse_loop_with_oracle_denoiser(scheduler, name):
    """With the exact eps of a point mass at x0*, every sampler lands on x0* and reports x0_pred each step."""
    target = torch.tensor([0.7, -1.2])
    sampler = build_sampler(scheduler.config, name, "epsilon", image_like=False)
    seen = []
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    out = diffusion.sample(
        PointMassOracle(scheduler.alphas_cumprod, target),
        sampler,
        noise,
        50,
        generator=torch.Generator().manual_seed(1),
        callback=lambda i, t, x, x0: seen.append((i, x0.shape)),
    )
    assert len(seen) == len(sampler.scheduler.timesteps) and seen[-1][1] == (16, 2)
    assert torch.allclose(out, target.expand(16, 2), atol=0.05)


def test_ddim_steps_with_the_eps_of_its_clipped_x0():
    """DDIM with clip_sample steps with the eps implied by the clipped x0, so every x_t stays on that x0's path,
    x_t = sqrt(a_t) x0c + sqrt(1 - a_t) eps_c with one eps_c; stepping with the raw eps, x_t and x0 disagree."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=True)
    target = torch.tensor([3.0, 0.5])  # a point mass, its first coordinate outside [-1, 1]
    sampler = build_sampler(
        scheduler.config, "DDIMScheduler", "epsilon", image_like=False, overrides={"timestep_spacing": "trailing"}
    )
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    path = []
    diffusion.sample(
        PointMassOracle(scheduler.alphas_cumprod, target),
        sampler,
        noise,
        20,
        callback=lambda i, t, x, x0: path.append(x),
    )
    a = scheduler.alphas_cumprod
    x0c, a_T = target.clamp(-1, 1), a[sampler.scheduler.timesteps[0]]
    eps_c = (noise - a_T.sqrt() * x0c) / (1 - a_T).sqrt()
    for x, t_prev in zip(
        path, sampler.scheduler.timesteps[1:], strict=False
    ):  # after step i the sample is at the next timestep
        assert torch.allclose(x, a[t_prev].sqrt() * x0c + (1 - a[t_prev]).sqrt() * eps_c, atol=1e-4)
    assert torch.allclose(path[-1], x0c.expand(4, 2), atol=1e-4)
