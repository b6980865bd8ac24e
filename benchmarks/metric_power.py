"""The power of the 2D sample metrics: what exact samples, a Gaussian with the data's mean and covariance and
trained checkpoints read, each over sample seeds, beside the independent yardstick.

    python benchmarks/metric_power.py --ckpt half=outputs/moons/.../half.ckpt shipped=outputs/moons/.../last.ckpt

Each metric is read as validation reads it (metrics/validation.py): N generated points against the first N held-out
points of configs/moons.yaml's data, over the mean of 8 independent draws of the data distribution (the floor). The
yardstick is the issue's: SWD of 20,000 samples against 20,000 independent draws, over the mean of 8 more such draws.
Checkpoints sample with --sampler/--steps (DPM-Solver++ 20 by default). Prints mean ± standard deviation over seeds.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import yaml

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data.toy2d import Toy2DDataModule, draw_toy2d
from lightning_diffusion.metrics.distances import histogram_chi2, sliced_wasserstein
from lightning_diffusion.metrics.validation import FLOOR_DRAWS

STATISTICS = {"swd": sliced_wasserstein, "chi2": histogram_chi2}
YARDSTICK_SAMPLES = 20_000


def moons_data(num_val_samples: int, config: str = "configs/moons.yaml") -> Toy2DDataModule:
    """The config's data (the same training split and statistics) with `num_val_samples` held out."""
    init_args = yaml.safe_load(open(config))["data"]["init_args"]
    return Toy2DDataModule(**init_args | {"num_val_samples": num_val_samples})


def exact(data: Toy2DDataModule, n: int, seed: int, labels: np.ndarray | None = None) -> torch.Tensor:
    """n independent draws of the data distribution in model space (with the classes `labels`, or drawn): an exact
    model's samples."""
    points, _ = draw_toy2d(data.dataset, n, data.noise, np.random.RandomState([seed, 77]), labels)
    mean, std = (s.numpy() for s in data._splits["stats"])
    return torch.from_numpy((points - mean) / std).float()


def gaussian(data: Toy2DDataModule, n: int, seed: int) -> torch.Tensor:
    """A model that learned only the mean and covariance of the training data."""
    train = data._splits["train"][0].double()
    cholesky = torch.linalg.cholesky(torch.cov(train.T)).float()
    return train.mean(0).float() + torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) @ cholesky.T


def checkpoint_sampler(path: str, sampler: str | None, steps: int | None):
    model = DiffusionModule.load_from_checkpoint(path, map_location="cpu")
    options = {"sampler": sampler, "num_inference_steps": steps}

    def sample(data: Toy2DDataModule, n: int, seed: int) -> torch.Tensor:
        return model.sample(n, generator=torch.Generator().manual_seed(seed), data_space=False, **options)

    return sample


def yardstick(data: Toy2DDataModule, samples: torch.Tensor, seed: int, labels: np.ndarray | None = None) -> float:
    """SWD of `samples` against independent draws of the data distribution (with the classes `labels`: those of the
    samples), over the mean of FLOOR_DRAWS more."""
    n = len(samples)
    reference = exact(data, n, 10_000 + seed, labels)
    floor = np.mean(
        [sliced_wasserstein(exact(data, n, 20_000 + 100 * seed + j, labels), reference) for j in range(FLOOR_DRAWS)]
    )
    return float(sliced_wasserstein(samples, reference)) / floor


def readings(data: Toy2DDataModule, sample, n: int, seeds: int) -> dict[str, list[float]]:
    """The validation ratios of each statistic at n samples, over `seeds` sample seeds."""
    real = data._splits["val"][0][:n]
    floors = data.independent_draws(n, FLOOR_DRAWS)
    means = {name: np.mean([float(f(d, real)) for d in floors]) for name, f in STATISTICS.items()}
    out: dict[str, list[float]] = {name: [] for name in STATISTICS}
    for seed in range(seeds):
        x = sample(data, n, seed)
        for name, f in STATISTICS.items():
            out[name].append(float(f(x, real)) / means[name])
    return out


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="*", default=[], help="NAME=PATH checkpoints of moons.yaml's data")
    parser.add_argument("--sampler", default="DPMSolverMultistepScheduler")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="*", default=[2000, 20000], help="validation sample counts")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    data = moons_data(max(args.sizes))
    models = {"exact samples": exact, "Gaussian (data mean, cov)": gaussian}
    models |= {
        name: checkpoint_sampler(path, args.sampler, args.steps) for name, path in (c.split("=", 1) for c in args.ckpt)
    }
    header = ["model", "yardstick SWD ratio (20,000)"] + [f"{s} ratio, N={n}" for n in args.sizes for s in STATISTICS]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for name, sample in models.items():
        cells = [
            name,
            spread([yardstick(data, sample(data, YARDSTICK_SAMPLES, 1000 + s), s) for s in range(args.seeds)]),
        ]
        for n in args.sizes:
            values = readings(data, sample, n, args.seeds)
            cells += [spread(values[s]) for s in STATISTICS]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
