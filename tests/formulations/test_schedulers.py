"""Every sampler, fed the exact denoiser of Gaussian data, reproduces that Gaussian for every prediction type.

For x0 ~ N(mu, s^2 I) and x_t = sqrt(a) x0 + sqrt(1 - a) eps the posterior means are linear in x_t:
E[x0|x_t] = mu + sqrt(a) s^2 / (a s^2 + 1 - a) (x_t - sqrt(a) mu), E[eps|x_t] = (x_t - sqrt(a) E[x0|x_t]) / sqrt(1 - a)
and E[v|x_t] = sqrt(a) E[eps|x_t] - sqrt(1 - a) E[x0|x_t]. A sampler that reads the oracle's output as the wrong
target (v or x0 as eps) ends tens of units away from mu; one that reads it right lands within sampling error.
"""

import functools
import inspect
import json
import math

import diffusers
import pytest
import torch
from diffusers import DDPMScheduler

from lightning_diffusion import DiffusionModule

MU, S = 0.7, 0.5
# beta_start/beta_end given explicitly: diffusers' from_config gives a sampler its *own* defaults for the options a
# scheduler was built without, and Heun's (0.00085, 0.012) differ (see test_default_betas_reach_every_sampler)
SCHEDULER = DDPMScheduler(
    num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False
)
# Steps per sampler: first-order samplers shrink the variance of Gaussian data at few steps (std 0.44 for DDPM and
# Euler ancestral at 50 steps, 0.47 for DDIM and Euler); at these counts every sampler's std is within 0.0085 of S and
# its mean within 0.0025 of MU (measured with 1e5 points). PNDM needs 250: it combines v-outputs of earlier steps
# before converting them to eps with the current sample, an approximation off by 0.014 in the mean at 50 steps.
STEPS = {
    "DDPMScheduler": 500,
    "DDIMScheduler": 200,
    "DPMSolverMultistepScheduler": 50,
    "EulerDiscreteScheduler": 200,
    "UniPCMultistepScheduler": 50,
    "EulerAncestralDiscreteScheduler": 500,
    "HeunDiscreteScheduler": 50,
    "PNDMScheduler": 250,
    "DEISMultistepScheduler": 50,
}
PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"]
CANNOT_READ_X0 = {"PNDMScheduler", "EulerAncestralDiscreteScheduler"}  # diffusers refuses prediction_type="sample"
# 2D points, and (1, 4, 4) images for the samplers that can threshold x0, which diffusers does to images only (the
# module turns it on for DPM-Solver and UniPC when the schedule clips, off here): 20000 values each
SHAPES = {"2d": ((2,), 10_000), "image": ((1, 4, 4), 1250)}
THRESHOLDING = [name for name in STEPS if "thresholding" in inspect.signature(getattr(diffusers, name)).parameters]
Z = 4.0  # standard errors allowed; the samples are seeded, so this only guards against diffusers' RNG use changing
MEAN_SLACK = 0.005  # x_T ~ N(0, I) instead of N(sqrt(a_T) mu, ...): a bias of about s sqrt(a_T) mu = 0.002
STD_SLACK = 0.01  # the discretization at STEPS (above)


class GaussianOracle(torch.nn.Module):
    """The posterior mean of `prediction_type` (eps, x0 or v) for data N(mu, s^2 I), at any (float) timestep.

    Each posterior mean is affine in x_t, coef * x_t + offset, with coefficients computed in float64 once per distinct
    timestep. Float timesteps (Euler, Heun) get the noise level sigma = sqrt((1 - a) / a) interpolated linearly
    between the integer timesteps, as diffusers' k-diffusion samplers compute theirs, so oracle and sampler agree."""

    def __init__(self, alphas_cumprod: torch.Tensor, mu: float, s: float, prediction_type: str) -> None:
        super().__init__()
        a = alphas_cumprod.double()
        self.sigmas, self.mu, self.s, self.prediction_type = ((1 - a) / a).sqrt(), mu, s, prediction_type

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        t = t.double().clamp(0, len(self.sigmas) - 1)
        low = t.floor().long()
        high, w = (low + 1).clamp(max=len(self.sigmas) - 1), t - low
        sigma = (1 - w) * self.sigmas[low] + w * self.sigmas[high]
        return 1 / (1 + sigma**2)

    def coefficients(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coef, offset) of E[target | x_t] = coef * x_t + offset at alpha_bar `a`."""
        mu, s2, var = self.mu, self.s**2, a * self.s**2 + 1 - a  # var: the variance of x_t
        x0 = (a.sqrt() * s2 / var, mu * (1 - a * s2 / var))  # mu + sqrt(a) s^2 / var (x_t - sqrt(a) mu)
        eps = ((1 - a).sqrt() / var, -(1 - a).sqrt() / var * a.sqrt() * mu)  # (x_t - sqrt(a) E[x0|x_t]) / sqrt(1 - a)
        v = tuple(
            a.sqrt() * e - (1 - a).sqrt() * x for e, x in zip(eps, x0, strict=False)
        )  # sqrt(a) E[eps|x_t] - sqrt(1 - a) E[x0|x_t]
        return {"epsilon": eps, "sample": x0, "v_prediction": v}[self.prediction_type]

    def forward(self, x_t, t, class_labels=None):
        steps, index = torch.unique(t.reshape(-1).cpu(), return_inverse=True)  # the samplers give one timestep
        coef, offset = self.coefficients(self.alpha_bar(steps))
        if len(steps) > 1:
            coef, offset = coef[index.expand(x_t.shape[0])], offset[index.expand(x_t.shape[0])]
        shape = (-1, *[1] * (x_t.ndim - 1))
        return coef.to(x_t).view(shape) * x_t + offset.to(x_t).view(shape)


def oracle_model(prediction_type: str, sampler: str, sample_shape: tuple, scheduler=SCHEDULER) -> DiffusionModule:
    oracle = GaussianOracle(scheduler.alphas_cumprod, MU, S, prediction_type)
    return DiffusionModule(
        denoiser=oracle,
        scheduler=scheduler,
        prediction_type=prediction_type,
        sampler=sampler,
        num_inference_steps=STEPS.get(sampler, 50),  # multistep solvers cannot take the default 1000
        sample_shape=sample_shape,
    )


@functools.cache
def samples(sampler: str, prediction_type: str, shape: str) -> torch.Tensor:
    """Seeded samples of the oracle model (the same x_T and sampler noise for every prediction type)."""
    sample_shape, n = SHAPES[shape]
    model = oracle_model(prediction_type, sampler, sample_shape)
    return model.sample(
        n, num_inference_steps=STEPS[sampler], generator=torch.Generator().manual_seed(0), data_space=False
    )


def assert_gaussian(x: torch.Tensor) -> None:
    """Mean and std of all coordinates (iid N(MU, S^2) if right) within Z standard errors plus the known biases."""
    values = x.double().flatten()
    m = values.numel()
    mean_tol, std_tol = Z * S / math.sqrt(m) + MEAN_SLACK, Z * S / math.sqrt(2 * m) + STD_SLACK
    mean, std = values.mean().item(), values.std().item()
    assert abs(mean - MU) < mean_tol and abs(std - S) < std_tol, (
        f"mean {mean:.4f} (want {MU} +- {mean_tol:.4f}), std {std:.4f} (want {S} +- {std_tol:.4f})"
    )


def test_oracle_is_the_posterior_mean():
    """The oracle's residuals against the true eps, x0 and v have mean zero and are uncorrelated with x_t, which for
    jointly Gaussian (target, x_t) makes it E[target | x_t]; and at integer t it uses the schedule's own alpha_bar."""
    g = torch.Generator().manual_seed(1)
    n = 100_000
    for t in (20, 300, 900):
        a = SCHEDULER.alphas_cumprod[t].double()
        x0 = MU + S * torch.randn(n, generator=g, dtype=torch.float64)
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        targets = {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}
        oracle = GaussianOracle(SCHEDULER.alphas_cumprod, MU, S, "epsilon")
        assert oracle.alpha_bar(torch.tensor([float(t)])).item() == pytest.approx(a.item(), rel=1e-9)
        for prediction_type, target in targets.items():
            oracle.prediction_type = prediction_type
            residual = target - oracle(x_t.view(n, 1), torch.tensor(t)).view(n)
            se = residual.std().item() / math.sqrt(n)
            assert abs(residual.mean().item()) < 5 * se
            assert abs(torch.corrcoef(torch.stack([residual, x_t]))[0, 1].item()) < 5 / math.sqrt(n)


def test_oracle_sees_the_noise_level_of_float_timesteps():
    """At Euler's float timesteps the oracle's alpha_bar is 1 / (1 + sigma^2) of Euler's own sigmas."""
    euler = diffusers.EulerDiscreteScheduler.from_config(SCHEDULER.config)
    euler.set_timesteps(37)
    assert (euler.timesteps != euler.timesteps.round()).any()  # really between the integer timesteps
    oracle = GaussianOracle(SCHEDULER.alphas_cumprod, MU, S, "epsilon")
    expected = 1 / (1 + euler.sigmas[:-1].double() ** 2)
    assert torch.allclose(oracle.alpha_bar(euler.timesteps), expected, rtol=1e-5)


CASES = [
    (sampler, prediction_type, shape)
    for shape in SHAPES
    for sampler in (STEPS if shape == "2d" else THRESHOLDING)
    for prediction_type in PREDICTION_TYPES
    if not (prediction_type == "sample" and sampler in CANNOT_READ_X0)
]


@pytest.mark.parametrize("sampler,prediction_type,shape", CASES)
def test_samplers_recover_the_gaussian(sampler, prediction_type, shape):
    """Samples of the exact denoiser have the data's mean and std: the sampler reads the output as the model's
    prediction_type (read as eps, a v or x0 output ends with |mean| and std in the tens)."""
    assert_gaussian(samples(sampler, prediction_type, shape))


@pytest.mark.parametrize(
    "sampler,shape", sorted({(sampler, shape) for sampler, _, shape in CASES if sampler != "PNDMScheduler"})
)
def test_prediction_types_give_the_same_samples(sampler, shape):
    """From the same x_T and noise, the eps, x0 and v oracles give the same samples to float32 precision: the samplers
    convert between the targets exactly (PNDM, which does not for v and refuses x0, is left out)."""
    reference = samples(sampler, "epsilon", shape)
    for prediction_type in PREDICTION_TYPES[1:]:
        if prediction_type == "sample" and sampler in CANNOT_READ_X0:
            continue
        difference = (samples(sampler, prediction_type, shape) - reference).abs().max().item()
        assert difference < 1e-4, f"{prediction_type}: max difference {difference:.2e}"


@pytest.mark.parametrize("sampler", sorted(CANNOT_READ_X0))
def test_samplers_that_cannot_read_x0_refuse(sampler):
    """PNDM and Euler ancestral have no x0 parameterization: a sample-prediction model is refused, not misread."""
    with pytest.raises((ValueError, NotImplementedError), match="sample"):
        oracle_model("sample", sampler, (2,)).sample(
            4, num_inference_steps=5, generator=torch.Generator().manual_seed(0)
        )


DEFAULT_BETAS = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


@pytest.mark.parametrize("sampler", [*STEPS, "KDPM2DiscreteScheduler"])
def test_default_betas_reach_every_sampler(sampler):
    """With a training DDPMScheduler built on its default betas, as in Python code, the sampler still samples the
    training schedule's process (before samplers.build_sampler dropped diffusers' "defaulted" marker, Heun and KDPM2
    took their own default betas and ended with mean 0.57 instead of 0.7)."""
    model = oracle_model("epsilon", sampler, (2,), scheduler=DEFAULT_BETAS)
    x = model.sample(
        2000, num_inference_steps=STEPS.get(sampler, 50), generator=torch.Generator().manual_seed(0), data_space=False
    )
    assert_gaussian(x)


def test_export_keeps_the_prediction_type(tmp_path, fake_mnist_root):
    """A v-prediction UNet exports a diffusers scheduler that reads its output as v: prediction_type is the model's,
    and the scheduler's x0 from a UNet output is sqrt(a) x_t - sqrt(1 - a) v."""
    from helpers.image_runs import MNIST, fit

    from lightning_diffusion.tools.export import export

    fit(
        MNIST,
        tmp_path,
        fake_mnist_root,
        "--model.prediction_type",
        "v_prediction",
        "--trainer.max_steps",
        "1",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.num_sanity_val_steps",
        "0",
        "--data.init_args.batch_size",
        "2",
        "--model.denoiser.init_args.block_out_channels",
        "[32, 32]",
    )
    (ckpt,) = (tmp_path / "mnist" / "version_0" / "checkpoints").glob("last.ckpt")
    folder = export(ckpt, tmp_path / "export")
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    model = DiffusionModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.formulation.prediction_type == "v_prediction"
    assert scheduler.config.prediction_type == "v_prediction"
    assert json.loads((folder / "lightning_diffusion.json").read_text())["prediction_type"] == "v_prediction"
    g = torch.Generator().manual_seed(0)
    x_t, v, t = (
        0.2 * torch.randn(1, 1, 32, 32, generator=g),
        0.2 * torch.randn(1, 1, 32, 32, generator=g),
        600,
    )  # |x0| < 1: unclipped
    a = scheduler.alphas_cumprod[t]
    x0 = scheduler.step(v, t, x_t, generator=g).pred_original_sample
    assert torch.allclose(x0, a.sqrt() * x_t - (1 - a).sqrt() * v, atol=1e-6)
