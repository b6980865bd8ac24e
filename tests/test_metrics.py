import math

import torch

from lightning_diffusion.metrics import sliced_wasserstein


def test_identical_samples_give_zero():
    x = torch.randn(1000, 2)
    assert sliced_wasserstein(x, x).item() == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(1000)]).item() < 1e-6


def test_shifted_gaussians_closed_form():
    """For N(0, I) and N(mu, I) in d dims, SW_2^2 = E_theta (theta . mu)^2 = |mu|^2 / d."""
    torch.manual_seed(0)
    n, d = 2_000, 4
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0])
    swd = sliced_wasserstein(torch.randn(n, d), torch.randn(n, d) + mu, num_projections=4_000)
    assert abs(swd.item() - mu.norm().item() / math.sqrt(d)) < 0.03


def test_scaled_gaussians_closed_form():
    """For N(0, I) and N(0, s^2 I), every projection differs by |s - 1|: SW_2 = |s - 1|."""
    torch.manual_seed(1)
    swd = sliced_wasserstein(torch.randn(20_000, 2), 3.0 * torch.randn(20_000, 2))
    assert abs(swd.item() - 2.0) < 0.05


def test_shape_mismatch_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(torch.randn(10, 2), torch.randn(9, 2))


def test_mmd_identical_distributions_near_zero():
    from lightning_diffusion.metrics import mmd_rbf

    torch.manual_seed(2)
    assert abs(mmd_rbf(torch.randn(2000, 2), torch.randn(2000, 2)).item()) < 2e-3


def test_mmd_shifted_gaussians_closed_form():
    """For N(0, s^2 I) vs N(mu, s^2 I) in d dims and kernel bandwidth b:
    MMD^2 = 2 (b^2 / (b^2 + 2 s^2))^(d/2) (1 - exp(-|mu|^2 / (2 (b^2 + 2 s^2))))."""
    from lightning_diffusion.metrics import mmd_rbf

    torch.manual_seed(3)
    d, s, b = 2, 1.0, 1.0
    mu = torch.tensor([1.0, 0.5])
    expected = 2 * (b**2 / (b**2 + 2 * s**2)) ** (d / 2) * (1 - math.exp(-mu.pow(2).sum().item() / (2 * (b**2 + 2 * s**2))))
    value = mmd_rbf(torch.randn(3000, d) * s, torch.randn(3000, d) * s + mu, bandwidth=b).item()
    assert abs(value - expected) < 0.01, (value, expected)
