"""What "learned the two moons" means in the tests, in one place.

A check that a model which learned nothing passes proves nothing: a standard Gaussian scores 1.2-4x the real-vs-real
floor of the SWD, and any zero-mean output has the data's mean. So each check here is one that a Gaussian fitted to
the data (its mean and covariance), a model sampled with the wrong target and a barely trained model all fail, and
tests/test_quality.py proves that they do:

- `moons_failures`: the two-moons structure in data space (configs/moons.yaml's noise 0.05): three quarters of the
  samples lie on the moons (within 2 noise standard deviations of the noise-free arcs), both moons get their share,
  every part of both arcs is reached, and the sliced Wasserstein distance to real moons is well below a fitted
  Gaussian's. The first is what tells a trained model from a half-trained one, whose moons are blurred.
- `swd_failure`: a logged SWD (`val/swd`) against the held-out set it was measured on, with the same yardstick. The
  SWD hardly sees blur (model space, 1000 samples: half-trained 0.053-0.065, trained 0.037-0.059, a fitted Gaussian
  0.26-0.28): it fails a Gaussian and a wrong target, not a half-trained model.

Measured with the session's moons recipe (tests/conftest.py: trained_moons) at seeds 0, 1 and 2, 2000 samples, the
fraction within 0.1 of the arcs: real 0.95, trained 0.81-0.82 (DDIM, 25 steps) and 0.86-0.88 (DPM-Solver++ 20, DDPM
100), the same runs after half their epochs 0.59-0.70, a fitted Gaussian 0.23, the trained model read with the
wrong target 0.00.
"""

from __future__ import annotations

import math

import torch
from sklearn.datasets import make_moons
from torch import Tensor

from lightning_diffusion.metrics.distances import sliced_wasserstein

NOISE = 0.05  # configs/moons.yaml
ON_SUPPORT_RADIUS = 2 * NOISE  # 95% of real points lie this close to the noise-free arcs
MIN_ON_SUPPORT = 0.75  # see the module docstring
SHARE_RANGE = (0.35, 0.65)  # the upper moon's share of the samples on the moons (real: 0.5)
COVERAGE_RADIUS = 0.1
MIN_COVERAGE = 0.9  # of 200 points along the arcs, those with a sample this close (real: 1.0)
SWD_FRACTION = 0.5  # SWD at most this fraction of a fitted Gaussian's (real vs real: 0.05; trained: 0.15-0.4)


def moons_arcs(points_per_moon: int = 2000) -> tuple[Tensor, Tensor]:
    """The noise-free moons of sklearn's make_moons: (cos s, sin s) and (1 - cos s, 1/2 - sin s), s in [0, pi]."""
    s = torch.linspace(0, math.pi, points_per_moon)
    return torch.stack([s.cos(), s.sin()], 1), torch.stack([1 - s.cos(), 0.5 - s.sin()], 1)


def real_moons(n: int, seed: int) -> Tensor:
    """n real two-moons points in data space, as configs/moons.yaml draws them."""
    return torch.tensor(make_moons(n, noise=NOISE, random_state=seed)[0], dtype=torch.float32)


def fitted_gaussian(points: Tensor, n: int, seed: int = 0) -> Tensor:
    """n samples of the Gaussian with the mean and covariance of `points` (N, D): what a model that learned only
    the first two moments would give."""
    generator = torch.Generator().manual_seed(seed)
    cholesky = torch.linalg.cholesky(torch.cov(points.double().T)).float()
    return points.mean(0) + torch.randn(n, points.shape[1], generator=generator) @ cholesky.T


def gaussian_swd(real: Tensor, fit_to: Tensor, seed: int = 0) -> float:
    """The yardstick: SWD between `real` and as many samples of a Gaussian fitted to `fit_to`."""
    return sliced_wasserstein(fitted_gaussian(fit_to, len(real), seed), real).item()


def swd_failure(swd: float, real: Tensor, fit_to: Tensor) -> str | None:
    """Why an SWD measured against `real` is no better than a Gaussian fitted to `fit_to` would score, or None."""
    yardstick = gaussian_swd(real, fit_to)
    if swd < SWD_FRACTION * yardstick:
        return None
    return f"SWD {swd:.4f} is not below {SWD_FRACTION} x a fitted Gaussian's {yardstick:.4f}"


def moons_scores(samples: Tensor) -> dict[str, float]:
    """The structure statistics of `samples` (N, 2) in data space; see the module docstring."""
    samples = samples.float().cpu()
    upper, lower = moons_arcs()
    distance, nearest = torch.cdist(samples, torch.cat([upper, lower])).min(1)
    on = distance < ON_SUPPORT_RADIUS
    along = torch.cat([upper[::20], lower[::20]])  # 200 points along the arcs
    real = real_moons(len(samples), seed=12345)
    return {
        "on_support": on.float().mean().item(),
        "upper_share": ((nearest < len(upper)) & on).sum().item() / max(on.sum().item(), 1),
        "coverage": (torch.cdist(along, samples).min(1).values < COVERAGE_RADIUS).float().mean().item(),
        "swd": sliced_wasserstein(samples, real).item(),
        "gaussian_swd": gaussian_swd(real, real_moons(len(samples), seed=54321)),
    }


def moons_failures(samples: Tensor) -> list[str]:
    """Why `samples` (N, 2), in data space, are not two moons: an empty list if they are."""
    scores = moons_scores(samples)
    failures = []
    if not torch.isfinite(samples).all():
        failures.append("non-finite samples")
    if scores["on_support"] < MIN_ON_SUPPORT:
        failures.append(f"{scores['on_support']:.3f} of the samples on the moons, fewer than {MIN_ON_SUPPORT}")
    if not SHARE_RANGE[0] <= scores["upper_share"] <= SHARE_RANGE[1]:
        failures.append(f"the upper moon holds {scores['upper_share']:.3f} of them, outside {SHARE_RANGE}")
    if scores["coverage"] < MIN_COVERAGE:
        failures.append(f"{scores['coverage']:.3f} of the arcs reached, less than {MIN_COVERAGE}")
    if scores["swd"] >= SWD_FRACTION * scores["gaussian_swd"]:
        failures.append(
            f"SWD {scores['swd']:.4f} not below {SWD_FRACTION} x a fitted Gaussian's {scores['gaussian_swd']:.4f}"
        )
    return failures
