import math

import pytest
import torch

from lightning_diffusion.metrics.distances import sliced_wasserstein


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
    from lightning_diffusion.metrics.distances import mmd_rbf

    torch.manual_seed(2)
    assert abs(mmd_rbf(torch.randn(2000, 2), torch.randn(2000, 2)).item()) < 2e-3


def test_mmd_shifted_gaussians_closed_form():
    """For N(0, s^2 I) vs N(mu, s^2 I) in d dims and kernel bandwidth b:
    MMD^2 = 2 (b^2 / (b^2 + 2 s^2))^(d/2) (1 - exp(-|mu|^2 / (2 (b^2 + 2 s^2))))."""
    from lightning_diffusion.metrics.distances import mmd_rbf

    torch.manual_seed(3)
    d, s, b = 2, 1.0, 1.0
    mu = torch.tensor([1.0, 0.5])
    expected = (
        2 * (b**2 / (b**2 + 2 * s**2)) ** (d / 2) * (1 - math.exp(-mu.pow(2).sum().item() / (2 * (b**2 + 2 * s**2))))
    )
    value = mmd_rbf(torch.randn(3000, d) * s, torch.randn(3000, d) * s + mu, bandwidth=b).item()
    assert abs(value - expected) < 0.01, (value, expected)


def test_blocked_mmd_equals_the_whole_kernel_matrix():
    from lightning_diffusion.metrics.distances import mmd_rbf

    torch.manual_seed(4)
    x, y = torch.randn(300, 2), torch.randn(200, 2) + 0.3
    k = lambda a, b: torch.exp(-0.5 * torch.cdist(a, b).pow(2))  # noqa: E731 - bandwidth 1
    whole = (k(x, x).sum() - 300) / (300 * 299) + (k(y, y).sum() - 200) / (200 * 199) - 2 * k(x, y).mean()
    assert mmd_rbf(x, y, block=64).item() == pytest.approx(whole.item(), abs=1e-6)


def test_independent_draws_follow_the_asked_classes():
    import numpy as np

    from lightning_diffusion.data.toy2d import draw_toy2d

    labels = np.arange(2000) % 2
    for name in ("moons", "circles", "8gaussians", "checkerboard"):
        k = 8 if name == "8gaussians" else 2
        points, drawn = draw_toy2d(name, 2000, 0.0, np.random.RandomState(0), labels % k)
        assert (drawn == labels % k).all()
        if name == "moons":  # moon 0: the upper arc around (0, 0); moon 1: the lower one around (1, 0.5)
            assert (points[labels == 0, 1] >= -1e-9).all() and (points[labels == 1, 1] <= 0.5 + 1e-9).all()
        if name == "circles":  # class 0 on the unit circle, class 1 on the circle of radius 0.5
            radius = np.linalg.norm(points, axis=1)
            assert np.allclose(radius[labels == 0], 1.0) and np.allclose(radius[labels == 1], 0.5)
        if name == "checkerboard":  # the label is the parity of the column
            assert (np.floor(points[:, 0]) % 2 == labels % 2).all()
    angles = np.sort(np.arctan2(*draw_toy2d("circles", 4000, 0.0, np.random.RandomState(1))[0].T[::-1]))
    assert np.histogram(angles, bins=8)[0].min() > 400  # uniform angles: 500 per bin expected
    gaps = np.diff(
        angles
    )  # drawn, not spaced evenly as sklearn's: the gaps of uniform draws vary (about exponentially)
    assert gaps.std() > 0.5 * gaps.mean()


def test_exact_samples_score_a_mean_swd_ratio_of_one():
    """A model that samples the data distribution exactly: its SWD over the floor of sample_quality (the mean of
    FLOOR_DRAWS independent draws against the same held-out points) is 1 within two standard errors. Sixty held-out
    sets (each a fresh validation split of the moons data) with three exact sample sets each; the standard error is
    that of the sixty per-set means. Samples shifted by two noise standard deviations score far above 1."""
    import numpy as np

    from lightning_diffusion.data.toy2d import Toy2DDataModule, draw_toy2d
    from lightning_diffusion.metrics.distances import distribution_metrics, floor_metrics
    from lightning_diffusion.metrics.validation import floor_sets

    n, per_set = 250, 3
    exact, shifted = [], []
    for k in range(60):
        data = Toy2DDataModule(num_samples=2000, num_val_samples=n, seed=k)
        real = data.splits["val"].tensors[0]
        floors = floor_metrics(real, floor_sets(data, real, None, None))
        mean, std = (s.numpy() for s in data._splits["stats"])

        def ratio(shift: float, j: int, k=k, mean=mean, std=std, real=real, floors=floors) -> float:
            points, _ = draw_toy2d("moons", n, 0.05, np.random.RandomState([k, 100, j]))
            model = torch.from_numpy((points + shift - mean) / std).float()
            return distribution_metrics(model, real, floors=floors)["swd_ratio"].item()

        exact.append(np.mean([ratio(0.0, j) for j in range(per_set)]))
        shifted.append(ratio(0.1, 0))
    mean_ratio, standard_error = np.mean(exact), np.std(exact, ddof=1) / np.sqrt(len(exact))
    assert abs(mean_ratio - 1.0) < 2 * standard_error, (mean_ratio, standard_error)
    assert np.mean(shifted) > 1.0 + 4 * standard_error, np.mean(shifted)


def test_histogram_chi2_is_scipys_chi2_contingency_on_the_binned_table():
    import numpy as np
    from scipy.stats import chi2_contingency

    from lightning_diffusion.metrics.distances import histogram_chi2

    torch.manual_seed(5)
    x, y = torch.randn(3000, 2), torch.randn(2000, 2) * 1.5 + 0.2  # unequal sizes, and points beyond the grid
    edges = np.linspace(-4, 4, 81)
    tables = [np.histogram2d(*np.clip(p.numpy(), -3.999, 3.999).T, bins=[edges, edges])[0].ravel() for p in (x, y)]
    occupied = tables[0] + tables[1] > 0
    expected = chi2_contingency(np.stack([t[occupied] for t in tables]), correction=False)[0]
    assert histogram_chi2(x, y).item() == pytest.approx(expected, rel=1e-5)
    assert histogram_chi2(x, x).item() == 0.0
    with pytest.raises(ValueError, match="2D points"):
        histogram_chi2(torch.randn(10, 3), torch.randn(10, 3))


def test_chi2_ratio_reads_one_for_exact_samples_and_far_above_for_the_fitted_gaussian():
    """The validation's construction at 1,000 samples (moons.yaml's data): exact samples read 1.0 within two floor
    spreads over six seeds, a Gaussian with the data's mean and covariance more than 3x."""
    import numpy as np

    from lightning_diffusion.data.toy2d import Toy2DDataModule, draw_toy2d
    from lightning_diffusion.metrics.distances import distribution_metrics, floor_metrics
    from lightning_diffusion.metrics.validation import floor_sets

    data = Toy2DDataModule(num_samples=20000, num_val_samples=1000, seed=0)
    real = data.splits["val"].tensors[0]
    floors = floor_metrics(real, floor_sets(data, real, None, None))
    spread = (floors["chi2_floor_std"] / floors["chi2_floor"]).item()
    mean, std = (s.numpy() for s in data._splits["stats"])
    exact = []
    for seed in range(6):
        points, _ = draw_toy2d("moons", 1000, 0.05, np.random.RandomState([seed, 55]))
        model = torch.from_numpy((points - mean) / std).float()
        exact.append(distribution_metrics(model, real, floors=floors)["chi2_ratio"].item())
    assert spread < 0.15 and abs(np.mean(exact) - 1.0) < 2 * spread / np.sqrt(6), (exact, spread)
    train = data.splits["train"].tensors[0]
    gaussian = (
        train.mean(0)
        + torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)) @ torch.linalg.cholesky(torch.cov(train.T)).T
    )
    assert distribution_metrics(gaussian, real, floors=floors)["chi2_ratio"].item() > 3.0
