"""The yardstick for configs/moons.yaml's speed: a plain PyTorch + diffusers training loop on the same data with the
same network, given a wall-clock budget, then sampled with DDPM 1000 and DPM-Solver++ 20 and scored exactly as
`evaluate` scores a moons.yaml run (tools/scoring.PointScorer: 20,000 samples against moons.yaml's first 20,000
held-out points, over the mean of 8 independent draws; the SWD ratio and the binned chi-square ratio), mean ±
standard deviation over sample seeds: the same reference and floors as benchmarks/configs_2d.py's moons rows.

    python benchmarks/hand_loop_2d.py [--seconds 64] [--batch_size 256] [--lr 0.002]

The loop is what a careful user writes by hand: moons.yaml's standardized training points as one tensor,
a random permutation per epoch, DDPMScheduler.add_noise with v-prediction (as moons.yaml), fused AdamW with a
cosine learning rate over the budget, an EMA of the weights (decay 0.995) updated with torch._foreach_lerp_, and
the EMA weights sampled with each scheduler's own step loop.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from metric_power import YARDSTICK_SAMPLES, moons_data
from report import publish

from lightning_diffusion.denoisers import MLPDenoiser
from lightning_diffusion.tools.scoring import PointScorer

SAMPLERS = {"DDPM 1000": (DDPMScheduler, 1000), "DPM-Solver++ 20": (DPMSolverMultistepScheduler, 20)}


def train(points: torch.Tensor, seconds: float, batch_size: int, lr: float, seed: int = 0) -> tuple[MLPDenoiser, int]:
    """Train on `points` for `seconds` of wall time; returns the EMA network and the number of optimizer steps."""
    torch.manual_seed(seed)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction")
    net = MLPDenoiser(hidden_dim=128, num_blocks=3)
    ema = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0, fused=True)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for batch in points[torch.randperm(len(points))].split(batch_size):
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / seconds, 1.0)))
            noise = torch.randn_like(batch)
            t = torch.randint(0, 1000, (len(batch),))
            x_t = scheduler.add_noise(batch, noise, t)
            loss = torch.nn.functional.mse_loss(net(x_t, t), scheduler.get_velocity(batch, noise, t))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - 0.995)
            steps += 1
            if (elapsed := time.perf_counter() - start) >= seconds:
                break
    with torch.no_grad():
        for target, average in zip(net.parameters(), ema, strict=True):
            target.copy_(average)
    return net.eval(), steps


@torch.no_grad()
def sample(net: MLPDenoiser, sampler: type, steps: int, n: int, seed: int) -> torch.Tensor:
    clip = {"clip_sample": False} if sampler is DDPMScheduler else {}  # the standardized data is not in [-1, 1]
    scheduler = sampler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction", **clip)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, t.expand(n)), t, x, generator=generator).prev_sample
    return x


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=64.0)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num_samples", type=int, default=YARDSTICK_SAMPLES, help="samples per seed (and reference)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    data = moons_data(2 * args.num_samples)  # as moons.yaml: the floor's points after the reference's
    data.setup("fit")
    scorer = PointScorer(data, "held_out", args.num_samples)
    net, steps = train(data._splits["train"][0], args.seconds, args.batch_size, args.lr)
    lines = []
    for name, (sampler, num_steps) in SAMPLERS.items():
        scores = [scorer.scores([sample(net, sampler, num_steps, args.num_samples, s)]) for s in range(args.seeds)]
        cells = [[score[key] for score in scores] for key in ("swd_ratio", "chi2_ratio")]
        lines.append(f"| {name} | " + " | ".join(f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" for v in cells) + " |")
    header = f"| sampler | {args.num_samples:,} samples, scored as evaluate scores moons.yaml: SWD ratio | chi2 ratio |"
    table = "\n".join([header, "| --- | --- | --- |", *lines])
    details = (
        f"the hand loop trained {args.seconds:.0f} s ({steps} steps of {args.batch_size}, lr {args.lr}), "
        f"{args.seeds} sample seeds."
    )
    return publish("Hand loop on moons", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
