"""Flow matching against exact answers: for a point mass one Euler step is exact and every sampler lands on it, for
a Gaussian the samplers converge at their order to the exact flow, sampler_kwargs' shift overrides the
formulation's, and the time grid and training times are the promised ones."""

import pytest
import torch
from helpers.oracles import MU, FlowOracle, S, convergence, module

from lightning_diffusion.formulations import FlowMatching
from lightning_diffusion.formulations.flow import time_grid


def test_flow_euler_is_exact_in_one_step_for_a_point_mass():
    """From t = 1 the exact velocity of a point mass is x - MU: one Euler step to t = 0 lands on MU exactly."""
    model = module(FlowMatching(), FlowOracle(s=torch.zeros(2)), "euler")
    x = model.sample(64, num_inference_steps=1, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-6)


@pytest.mark.parametrize(
    "sampler",
    ["euler", "heun", "midpoint", "ancestral", "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"],
)
def test_flow_samplers_land_on_a_point_mass(sampler):
    model = module(FlowMatching(), FlowOracle(s=torch.zeros(2)), sampler)
    x = model.sample(256, num_inference_steps=6, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-4), (x - MU).abs().max()


@pytest.mark.parametrize("sampler", ["euler", "heun", "midpoint", "ancestral"])
def test_flow_sampler_kwargs_shift_overrides_the_formulations(sampler):
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    per_call = module(FlowMatching(), FlowOracle(), sampler, sampler_kwargs={"shift": 3.0})
    configured = module(FlowMatching(shift=3.0), FlowOracle(), sampler)
    uniform = module(FlowMatching(shift=3.0), FlowOracle(), sampler, sampler_kwargs={"shift": 1.0})
    g = torch.Generator  # the ancestral sampler's noise: the same stream for all three
    x = per_call.sample(64, num_inference_steps=4, noise=z, data_space=False, generator=g().manual_seed(1))
    assert torch.equal(
        x, configured.sample(64, num_inference_steps=4, noise=z, data_space=False, generator=g().manual_seed(1))
    )
    other = uniform.sample(64, num_inference_steps=4, noise=z, data_space=False, generator=g().manual_seed(1))
    assert not torch.allclose(x, other)


@pytest.mark.parametrize(
    "sampler, steps, order",
    [
        ("euler", 50, 1),
        ("heun", 12, 2),
        ("midpoint", 12, 2),
        ("FlowMatchEulerDiscreteScheduler", 50, 1),
        ("FlowMatchHeunDiscreteScheduler", 12, 2),
    ],
)
def test_flow_samplers_converge_to_the_exact_ode_of_a_gaussian(sampler, steps, order):
    """For Gaussian data the flow of the exact velocity maps noise z to MU + S z, sample by sample; the samplers
    approach it at their order."""
    model = module(FlowMatching(), FlowOracle(), sampler)
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    coarse, fine = convergence(
        lambda n: model.sample(512, num_inference_steps=n, noise=z, data_space=False), MU + S * z, steps
    )
    assert fine < 0.02 and coarse / fine > 0.6 * 4**order, (coarse, fine)


def test_flow_time_grid_and_training_times():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = time_grid(4, shift=3.0)  # SD3's shift spends more steps at high noise
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] == pytest.approx(0.75)
    torch.manual_seed(0)
    t = FlowMatching("logit_normal").training_times(20000, torch.device("cpu"))
    assert torch.logit(t).mean().abs() < 0.03 and torch.logit(t).std().item() == pytest.approx(1.0, abs=0.03)
    u = FlowMatching("uniform").training_times(20000, torch.device("cpu"))
    assert u.min() >= 0 and u.max() <= 1 and u.mean().item() == pytest.approx(0.5, abs=0.01)


def test_flow_ancestral_at_eta_0_is_eulers_step():
    """x_s = (1 - s) x0^ + s eps^ with x0^ = x_t - t v, eps^ = x_t + (1 - t) v is x_t + (s - t) v."""
    z = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    euler = module(FlowMatching(), FlowOracle(), "euler").sample(256, num_inference_steps=7, noise=z, data_space=False)
    ddim = module(FlowMatching(), FlowOracle(), "ancestral", sampler_kwargs={"eta": 0.0})
    assert torch.allclose(ddim.sample(256, num_inference_steps=7, noise=z, data_space=False), euler, atol=1e-6)


def test_flow_ancestral_samples_a_gaussian_with_its_mean_and_spread():
    """DDPM's posterior steps with the exact velocity of Gaussian data: the samples' mean and standard deviation
    approach MU and S as the steps grow (few steps shrink the spread towards the mean), and a seed repeats them."""
    model = module(FlowMatching(), FlowOracle(), "ancestral")

    def draw(steps, seed=0):
        return model.sample(
            20_000, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), data_space=False
        )

    x = draw(200)
    assert torch.allclose(x.mean(0), MU, atol=0.03) and torch.allclose(x.std(0), S, rtol=0.03), (x.mean(0), x.std(0))
    error = {n: (draw(n).std(0) / S - 1).abs().max() for n in (3, 50)} | {200: (x.std(0) / S - 1).abs().max()}
    assert error[3] > 0.3 and error[50] > 2 * error[200], error
    assert torch.equal(draw(5, seed=1), draw(5, seed=1)) and not torch.equal(draw(5, seed=1), draw(5, seed=2))
