"""Sample quality and wall time of diffusers samplers on a trained 2D checkpoint.

    python benchmarks/samplers_2d.py --ckpt outputs/moons/version_0/checkpoints/last.ckpt

Prints a table of sliced Wasserstein distance (model space, against held-out points from the checkpoint's own
data config) and its real-vs-real floor, and appends it with the command and the machine to notes/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from report import publish

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.metrics import sliced_wasserstein

SAMPLERS = [
    ("DDPMScheduler", 1000),
    ("DDIMScheduler", 50),
    ("DDIMScheduler", 20),
    ("DPMSolverMultistepScheduler", 20),
    ("DPMSolverMultistepScheduler", 10),
    ("EulerDiscreteScheduler", 50),
    ("UniPCMultistepScheduler", 10),
]


def parse_samplers(pairs: list[str] | None) -> list[tuple[str, int]]:
    """--samplers NAME:STEPS pairs as (name, steps); none given: the standard set."""
    return [(pair.split(":")[0], int(pair.split(":")[1])) for pair in pairs] if pairs else SAMPLERS


def held_out(ckpt: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent held-out samples of size n from the data config saved beside the checkpoint."""
    config = yaml.safe_load((ckpt.parent.parent / "config.yaml").read_text())["data"]["init_args"]
    data = Toy2DDataModule(**{**config, "num_val_samples": 2 * n})
    val = data._splits["val"][0]
    return val[:n], val[n:]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--num_samples", type=int, default=2000)
    parser.add_argument("--samplers", nargs="*", default=None, help="NAME:STEPS pairs (default: the standard set)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    samplers = parse_samplers(args.samplers)

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    model = DiffusionModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    real_a, real_b = held_out(args.ckpt, args.num_samples)
    floor = sliced_wasserstein(real_b, real_a).item()
    rows = [f"| real vs real (floor) | - | {floor:.4f} | 1.00 | - | - |"]
    reference = None  # the SWD of the first sampler (DDPM 1000 in the standard set), the yardstick
    for name, steps in samplers:
        start = time.perf_counter()
        x = model.sample(args.num_samples, sampler=name, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), data_space=False)
        seconds = time.perf_counter() - start
        swd = sliced_wasserstein(x, real_a).item()
        reference = swd if reference is None else reference
        rows.append(f"| {name} | {steps} | {swd:.4f} | {swd / floor:.2f} | {swd / reference:.2f} | {seconds:.2f} |")
    first = f"{samplers[0][0]} {samplers[0][1]}"
    table = "\n".join([
        f"| sampler | steps | SWD | SWD / floor | SWD / {first}'s | seconds |", "| --- | --- | --- | --- | --- | --- |",
        *rows,
    ])
    details = f"{args.num_samples} samples, SWD in the standardized space."
    return publish("2D samplers", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
