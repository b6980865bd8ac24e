"""Sample quality and wall time of samplers on a trained 2D checkpoint: a table made by `lightning_diffusion evaluate`.

    python benchmarks/samplers_2d.py --ckpt outputs/moons/version_0/checkpoints/last.ckpt

Evaluates the standard sampler set (or --samplers NAME:STEPS ...) with evaluate: sliced Wasserstein distance in model
space against held-out points of the checkpoint's own data config, its floor from independent draws of the data
distribution, mean ± standard deviation over --num_seeds sample seeds. Prints the table with each SWD's ratio to the
first sampler's, and appends it with the command and the machine to notes/benchmarks.md; evaluate's folder
(results.csv, the plots) lies beside the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from report import publish

from lightning_diffusion.__main__ import main as command
from lightning_diffusion.tools.report import read_rows

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


def run_evaluate(ckpt: Path, samplers: list[tuple[str, int]], options: list[str]) -> tuple[list[dict], Path]:
    """evaluate's rows for these (sampler, steps) cells, in their order, and its folder."""
    cells = "[" + ", ".join(f"{name}:{steps}" for name, steps in samplers) + "]"
    folder = command(["evaluate", "--runs", f"[{ckpt}]", "--cells", cells, "--progress", "false", *options])
    _, rows = read_rows(folder / "results.csv")
    by_cell = {(row["sampler"], row["steps"]): row for row in rows}
    return [by_cell[cell] for cell in samplers], folder


def spread(row: dict, name: str, digits: int) -> str:
    std = row.get(f"{name}_std")
    return f"{row[name]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--num_samples", type=int, default=2000)
    parser.add_argument("--num_seeds", type=int, default=3, help="sample seeds per sampler: the ± spread")
    parser.add_argument("--samplers", nargs="*", default=None, help="NAME:STEPS pairs (default: the standard set)")
    parser.add_argument("--output_dir", default=None, help="evaluate's --output_dir (default: beside the run)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    samplers = parse_samplers(args.samplers)
    options = ["--num_samples", str(args.num_samples), "--num_seeds", str(args.num_seeds)]
    rows, folder = run_evaluate(
        args.ckpt, samplers, options + (["--output_dir", args.output_dir] if args.output_dir else [])
    )

    reference = rows[0]["swd"]  # the first sampler's SWD (DDPM 1000 in the standard set), the yardstick
    floor = rows[0]
    lines = [f"| real vs real (floor) | - | {spread(floor, 'swd_floor', 4)} | 1.00 | - | - | - |"]
    for row in rows:
        lines.append(
            f"| {row['sampler']} | {row['steps']} | {spread(row, 'swd', 4)} | {spread(row, 'swd_ratio', 2)} | "
            f"{row['swd'] / reference:.2f} | {row['nfe']} | {row['seconds'] / row['seeds']:.2f} |"
        )
    first = f"{samplers[0][0]} {samplers[0][1]}"
    table = "\n".join(
        [
            f"| sampler | steps | SWD | SWD / floor | SWD / {first}'s | NFE | seconds per seed |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *lines,
        ]
    )
    details = (
        f"{args.num_samples} samples, SWD in the standardized space, mean ± standard deviation over "
        f"{args.num_seeds} sample seeds (the floor ± the spread of its independent draws); {folder}."
    )
    return publish("2D samplers", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
