"""exp_006: an EDM moons model sampled with Heun (Algorithm 1: without the S_churn that configs/moons_edm.yaml now
ships) at several steps and several sigma_max, scored by the binned chi-square (metrics.distances.histogram_chi2)
of 20,000 samples against independent draws of the data, as a ratio to the floor (exact draws against the same
reference), mean and standard deviation over seeds.

    python notes/experiments/exp_006/measure.py CHECKPOINT [CHECKPOINT ...] > table.md
"""

from __future__ import annotations

import argparse

import torch

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import make_toy2d
from lightning_diffusion.metrics.distances import histogram_chi2

N = 20_000


def standardized(points: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (points - mean) / std


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 18, 40])
    parser.add_argument("--sigma_max", type=float, nargs="+", default=[80.0, 20.0, 10.0, 5.0, 2.5])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    draws = {s: torch.from_numpy(make_toy2d("moons", N, 0.05, 1000 + s)[0]).float() for s in range(2 * args.seeds)}
    mean, std = draws[0].mean(0), draws[0].std(0)
    refs = {s: standardized(draws[s], mean, std) for s in range(args.seeds)}
    floor = torch.stack([histogram_chi2(standardized(draws[args.seeds + s], mean, std), refs[s]) for s in refs])
    print(f"floor (exact draws): chi2 {floor.mean():.1f} ± {floor.std():.1f} ({100 * floor.std() / floor.mean():.1f}%)")
    print()
    print("| model | sigma_max | Heun steps (NFE) | chi2 ratio |")
    print("| --- | --- | --- | --- |")
    for path in args.checkpoints:
        model = DiffusionModule.load_from_checkpoint(path, map_location="cpu").eval()
        name = path.split("/")[-4]
        for sigma_max in args.sigma_max:
            model.formulation.sigma_max = sigma_max
            for steps in args.steps:
                ratios = []
                for s in range(args.seeds):
                    generator = torch.Generator().manual_seed(s)
                    x = model.sample(
                        N, num_inference_steps=steps, sampler="heun", generator=generator, sampler_kwargs={}
                    )
                    ratios.append(histogram_chi2(standardized(x.float(), mean, std), refs[s]) / floor.mean())
                ratios = torch.stack(ratios)
                print(
                    f"| {name} | {sigma_max:g} | {steps} ({2 * steps - 1}) | {ratios.mean():.2f} ± {ratios.std():.2f} |"
                )


if __name__ == "__main__":
    main()
