"""Distances between distributions of samples, and their real-vs-real floors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 256, seed: int | None = 0) -> Tensor:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011) between two equal-size samples (N, ...).

    SW_2 = sqrt(E_theta W_2^2(theta.x, theta.y)) over random unit directions theta; in 1D, W_2 matches the
    sorted projections. A fixed `seed` uses the same directions on every call, so values compare across epochs.
    """
    if x.shape != y.shape:
        raise ValueError(
            f"sliced_wasserstein needs two samples of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    x, y = x.flatten(1).float(), y.flatten(1).float()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    theta = torch.randn(x.shape[1], num_projections, generator=generator).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P) unit directions
    x_proj, _ = torch.sort(x @ theta, dim=0)  # (N, P)
    y_proj, _ = torch.sort(y @ theta, dim=0)
    return (x_proj - y_proj).pow(2).mean().sqrt()


def _kernel_sum(x: Tensor, y: Tensor, gamma: float, block: int) -> Tensor:
    """sum_ij exp(-gamma |x_i - y_j|^2), a block of rows at a time: memory O(block * len(y)), not O(len(x) len(y))."""
    return sum((torch.exp(-gamma * torch.cdist(chunk, y).pow(2)).sum() for chunk in x.split(block)), x.new_zeros(()))


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float = 1.0, block: int = 4096) -> Tensor:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3) with the Gaussian kernel
    k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)); near 0 (and possibly slightly negative) for equal distributions."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    gamma = 1.0 / (2 * bandwidth**2)
    n, m = len(x), len(y)
    # the diagonal of k(x, x) is exp(0) = 1: the off-diagonal sum is the full sum minus n
    within_x = (_kernel_sum(x, x, gamma, block) - n) / (n * (n - 1))
    within_y = (_kernel_sum(y, y, gamma, block) - m) / (m * (m - 1))
    return within_x + within_y - 2 * _kernel_sum(x, y, gamma, block) / (n * m)


def histogram_chi2(x: Tensor, y: Tensor, bin_width: float = 0.1, extent: float = 4.0) -> Tensor:
    """Pearson's chi-square statistic of homogeneity between two samples of 2D points (N, 2), binned on a square
    grid of `bin_width` over [-extent, extent]^2 (points outside fall in the edge bins): sum over the bins with any
    point of sum_s (O_s - E_s)^2 / E_s, E_s = n_s (a + b) / (n_x + n_y), as scipy.stats.chi2_contingency computes
    it on the 2 x bins table (without Yates' correction). About the number of occupied bins for equal distributions."""
    if x.ndim != 2 or x.shape[1] != 2 or y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"histogram_chi2 needs two samples of 2D points, got {tuple(x.shape)} and {tuple(y.shape)}.")
    edges = torch.linspace(-extent, extent, round(2 * extent / bin_width) + 1)
    inside = extent * (1 - 1e-6)

    def counts(points: Tensor) -> Tensor:
        points = points.detach().double().cpu().clamp(-inside, inside)
        return torch.histogramdd(points, bins=[edges.double(), edges.double()]).hist.flatten()

    a, b = counts(x), counts(y)
    total = a + b
    occupied = total > 0
    a, b, total = a[occupied], b[occupied], total[occupied]
    expected_a, expected_b = total * len(x) / (len(x) + len(y)), total * len(y) / (len(x) + len(y))
    return ((a - expected_a).pow(2) / expected_a + (b - expected_b).pow(2) / expected_b).sum().float().to(x.device)


FloorSets = Tensor | Sequence[Tensor]


def is_points(x: Tensor) -> bool:
    """2D points (N, 2), the samples that histogram_chi2 bins."""
    return x.ndim == 2 and x.shape[1] == 2


def floor_metrics(real: Tensor, floor_sets: FloorSets, max_points: int | None = None) -> dict[str, Tensor]:
    """The floors of SWD and MMD (and, for 2D points, of histogram_chi2): the mean over `floor_sets` of the same
    distance to `real`, where each floor set is drawn like an exact model's samples (independent of `real`, of its
    size); with two or more sets also their standard deviation, the spread of one such estimate. SWD and MMD use
    the first `max_points` points of each set (None: all), as `distribution_metrics` does.

    Given `real`, an exact model's SWD and each floor set's have the same expectation, but the ratio of two single
    draws is biased upwards by E[1/floor]: the mean over several draws reduces that bias (notes/results_2d.md)."""
    sets = [floor_sets] if isinstance(floor_sets, Tensor) else list(floor_sets)
    few = real[:max_points]
    values = {
        "swd": torch.stack([sliced_wasserstein(b[:max_points], few) for b in sets]),
        "mmd": torch.stack([mmd_rbf(b[:max_points], few) for b in sets]),
    }
    if is_points(real):
        values["chi2"] = torch.stack([histogram_chi2(b, real) for b in sets])
    floors = {f"{name}_floor": v.mean() for name, v in values.items()}
    if len(sets) > 1:
        floors |= {f"{name}_floor_std": v.std() for name, v in values.items()}
    return floors


def distribution_metrics(
    generated: Tensor,
    real: Tensor,
    floor_sets: FloorSets | None = None,
    floors: dict[str, Tensor] | None = None,
    max_points: int | None = None,
) -> dict[str, Tensor]:
    """SWD and MMD of generated vs real samples, each beside its floor (`floor_metrics` of `floor_sets`, or the
    `floors` computed before), and `swd_ratio` = swd / swd_floor: 1 in expectation for a model that samples the
    data distribution. For 2D points also `chi2` (histogram_chi2) and `chi2_ratio`, 1.0 for an exact model within
    a spread of about 4% at 2,000 samples, where the SWD ratio's is 25% (notes/metrics_2d.md). SWD and MMD compare
    the first `max_points` points of each set (None: all; chi2 takes all): at 20,000 points they cost seconds each
    (MMD's kernel is quadratic) while their spread hardly shrinks."""
    if floors is None:
        if floor_sets is None:
            raise ValueError("distribution_metrics needs floor_sets or precomputed floors.")
        floors = floor_metrics(real, floor_sets, max_points)
    few, few_real = generated[:max_points], real[:max_points]
    swd, mmd = sliced_wasserstein(few, few_real), mmd_rbf(few, few_real)
    metrics = {"swd": swd, "swd_floor": floors["swd_floor"], "swd_ratio": swd / floors["swd_floor"], "mmd": mmd}
    if "chi2_floor" in floors:
        chi2 = histogram_chi2(generated, real)
        metrics |= {"chi2": chi2, "chi2_floor": floors["chi2_floor"], "chi2_ratio": chi2 / floors["chi2_floor"]}
    return metrics | floors  # the floors' spreads last
