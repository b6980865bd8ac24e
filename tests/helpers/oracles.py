"""The exact networks of the formulation tests (tests/formulations/): for Gaussian data N(MU, diag(S^2)) in 2D (with
S = 0: a point mass at MU) EDM's network F and flow matching's velocity are known in closed form, so a loss must be
zero at them and every sampler must land on the known sample."""

import torch
from torch import nn

from lightning_diffusion import DiffusionModule
from lightning_diffusion.formulations.edm import preconditioning
from lightning_diffusion.formulations.flow import NETWORK_TIME

MU, S = torch.tensor([1.5, -0.5]), torch.tensor([0.3, 0.8])  # a Gaussian N(MU, diag(S^2)) in 2D


class EDMOracle(nn.Module):
    """The exact network F of EDM for Gaussian data (S = 0: a point mass at MU): D(x; sigma) = E[x0 | x] =
    MU + S^2 / (S^2 + sigma^2) (x - MU), and F = (D - c_skip x) / c_out, from the network's inputs c_in x, c_noise."""

    def __init__(self, sigma_data: float, s: torch.Tensor = S) -> None:
        super().__init__()
        self.sigma_data, self.s = sigma_data, s

    def forward(self, x_in, c_noise, class_labels=None):
        sigma = (4 * c_noise.double()).exp()[:, None]
        c = preconditioning(sigma, self.sigma_data)
        x = x_in.double() / c["c_in"]
        d = MU + self.s**2 / (self.s**2 + sigma**2) * (x - MU)
        return ((d - c["c_skip"] * x) / c["c_out"]).float()


class FlowOracle(nn.Module):
    """The exact velocity of flow matching for Gaussian data: with a = 1 - t and var = a^2 S^2 + t^2,
    E[x0 | x_t] = MU + a S^2 / var (x_t - a MU), E[eps | x_t] = t / var (x_t - a MU), v = E[eps - x0 | x_t]."""

    def __init__(self, s: torch.Tensor = S) -> None:
        super().__init__()
        self.s = s

    def forward(self, x_t, time, class_labels=None):
        t = (time.double() / NETWORK_TIME)[:, None]
        a, x = 1 - t, x_t.double()
        var = a**2 * self.s**2 + t**2
        x0 = MU + a * self.s**2 / var * (x - a * MU)
        eps = t / var * (x - a * MU)
        return (eps - x0).float()


def module(formulation, oracle, sampler, **kwargs):
    return DiffusionModule(denoiser=oracle, formulation=formulation, sampler=sampler, sample_shape=(2,), **kwargs)


def convergence(sample, exact, steps):
    """The largest error of `sample(steps)` and of `sample(4 steps)` against the exact answer."""
    return [(sample(n) - exact).abs().max().item() for n in (steps, 4 * steps)]
