"""EDM against exact answers: its preconditioning is Table 1 (as diffusers' EDM schedulers have it), the Karras
sigmas are eq. 5, every sampler lands on a point mass and converges at its order to the exact probability-flow ODE of
a Gaussian, the stochastic sampler recovers the Gaussian, and sigma_data is measured once."""

import math

import pytest
import torch
from diffusers import EDMEulerScheduler
from helpers.oracles import MU, EDMOracle, S, convergence, module

from lightning_diffusion.formulations import EDM
from lightning_diffusion.formulations.edm import karras_sigmas, preconditioning


def test_edm_preconditioning_is_table_1():
    """sigma_data 0.5 (the paper's) at sigma 1: c_skip = 0.25 / 1.25, c_out = 0.5 / sqrt(1.25), c_in = 1 / sqrt(1.25),
    c_noise = ln(1) / 4 = 0, lambda = 1.25 / 0.25; lambda c_out^2 = 1 at every sigma (the effective weight of F's
    loss); and diffusers' EDM schedulers precondition the same way."""
    c = preconditioning(torch.tensor(1.0), 0.5)
    assert c["c_skip"].item() == pytest.approx(0.2)
    assert c["c_out"].item() == pytest.approx(0.4472135955)
    assert c["c_in"].item() == pytest.approx(0.894427191)
    assert c["c_noise"].item() == 0.0
    assert c["weight"].item() == pytest.approx(5.0)
    sigma = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0], dtype=torch.float64)
    c = preconditioning(sigma, 0.5)
    assert torch.allclose(c["weight"] * c["c_out"] ** 2, torch.ones_like(sigma))
    assert torch.allclose(c["c_noise"], sigma.log() / 4)
    reference = EDMEulerScheduler(sigma_data=0.5)
    x, f = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(reference.precondition_inputs(x, sigma[:, None]), c["c_in"][:, None] * x)
    assert torch.allclose(reference.precondition_noise(sigma), c["c_noise"])
    assert torch.allclose(
        reference.precondition_outputs(x, f, sigma[:, None]), c["c_skip"][:, None] * x + c["c_out"][:, None] * f
    )


def test_karras_sigmas_are_eq_5():
    sigmas = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert len(sigmas) == 19 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[17].item() == pytest.approx(0.002)
    i = 9  # (80^(1/7) + 9/17 (0.002^(1/7) - 80^(1/7)))^7
    assert sigmas[i].item() == pytest.approx((80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7)


@pytest.mark.parametrize("sampler", ["heun", "euler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"])
def test_edm_samplers_land_on_a_point_mass(sampler):
    model = module(EDM(sigma_data=0.5), EDMOracle(0.5, s=torch.zeros(2)), sampler)
    x = model.sample(256, num_inference_steps=8, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-4), (x - MU).abs().max()


@pytest.mark.parametrize(
    "sampler, steps, order",
    [("heun", 20, 2), ("euler", 100, 1), ("EDMEulerScheduler", 100, 1), ("EDMDPMSolverMultistepScheduler", 20, 2)],
)
def test_edm_samplers_converge_to_the_exact_ode_of_a_gaussian(sampler, steps, order):
    """The probability-flow ODE of Gaussian data is linear: from x_T it ends at exactly
    MU + S (x_T - MU) / sqrt(S^2 + sigma_T^2), sample by sample. The samplers approach it at their order: 4x the
    steps divide the error by about 4^order."""
    model = module(EDM(sigma_data=0.5), EDMOracle(0.5), sampler)
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    sigma_T = 80.0 if sampler in ("heun", "euler") else math.sqrt(80.0**2 + 1)  # diffusers' init_noise_sigma
    exact = MU + S * (sigma_T * z - MU) / (S**2 + sigma_T**2).sqrt()
    coarse, fine = convergence(
        lambda n: model.sample(512, num_inference_steps=n, noise=z, data_space=False), exact, steps
    )
    assert fine < 0.02 and coarse / fine > 0.6 * 4**order, (coarse, fine)


def test_edm_stochastic_sampler_recovers_the_gaussian():
    """Algorithm 2 with S_churn adds noise on the way: not the ODE's sample, but the same distribution."""
    model = module(EDM(sigma_data=0.5), EDMOracle(0.5), "heun", sampler_kwargs={"S_churn": 40, "S_tmax": 50})
    x = model.sample(8000, num_inference_steps=96, generator=torch.Generator().manual_seed(2), data_space=False)
    assert torch.allclose(x.mean(0), MU, atol=0.03) and torch.allclose(x.std(0), S, rtol=0.05)


def test_edm_measures_sigma_data_once():
    f = EDM()
    assert torch.isnan(f.sigma_data)
    data = torch.randn(4096, 2, generator=torch.Generator().manual_seed(0)) * 0.7
    f.calibrate(lambda: data)
    assert f.sigma_data.item() == pytest.approx(0.7, rel=0.03)
    f.calibrate(lambda: data * 10)  # given or measured: kept (a resumed run restores it from the checkpoint)
    assert f.sigma_data.item() == pytest.approx(0.7, rel=0.03)
    assert "sigma_data" in f.state_dict()
