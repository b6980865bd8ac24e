"""Distances between distributions of samples."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 256, seed: Optional[int] = 0) -> Tensor:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011) between two equal-size samples (N, ...).

    SW_2 = sqrt(E_theta W_2^2(theta.x, theta.y)) over random unit directions theta; in 1D, W_2 matches the
    sorted projections. A fixed `seed` uses the same directions on every call, so values compare across epochs.
    """
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs two samples of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
    x, y = x.flatten(1).float(), y.flatten(1).float()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    theta = torch.randn(x.shape[1], num_projections, generator=generator).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P) unit directions
    x_proj, _ = torch.sort(x @ theta, dim=0)  # (N, P)
    y_proj, _ = torch.sort(y @ theta, dim=0)
    return (x_proj - y_proj).pow(2).mean().sqrt()


def mmd_rbf(x: Tensor, y: Tensor, bandwidth: float = 1.0) -> Tensor:
    """Unbiased squared maximum mean discrepancy (Gretton et al. 2012, eq. 3) with the Gaussian kernel
    k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)); near 0 (and possibly slightly negative) for equal distributions."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    gamma = 1.0 / (2 * bandwidth**2)
    k_xx = torch.exp(-gamma * torch.cdist(x, x).pow(2))
    k_yy = torch.exp(-gamma * torch.cdist(y, y).pow(2))
    k_xy = torch.exp(-gamma * torch.cdist(x, y).pow(2))
    n, m = len(x), len(y)
    off_diagonal_mean = lambda k, size: (k.sum() - k.diagonal().sum()) / (size * (size - 1))  # noqa: E731
    return off_diagonal_mean(k_xx, n) + off_diagonal_mean(k_yy, m) - 2 * k_xy.mean()


def distribution_metrics(generated: Tensor, real: Tensor, real_floor: Tensor) -> dict[str, Tensor]:
    """SWD and MMD of generated vs real samples, each beside its floor: the same distance between two real sets
    of the same size (what a model that samples the data distribution scores)."""
    swd, floor = sliced_wasserstein(generated, real), sliced_wasserstein(real_floor, real)
    return {
        "swd": swd, "swd_floor": floor, "swd_ratio": swd / floor,
        "mmd": mmd_rbf(generated, real), "mmd_floor": mmd_rbf(real_floor, real),
    }
