"""The shipped 2D configs as a newcomer meets them: each trained once as shipped, timed, then measured by `evaluate`
with the sampler it ships, beside its own last validation reading.

    python benchmarks/configs_2d.py [--configs configs/moons.yaml ...]

The measurement is `python -m lightning_diffusion evaluate --num_samples 20000 --num_seeds 3` on the run: each
seed's 20,000 samples against 20,000 held-out points, over the mean of 8 independent draws of the data distribution
(exact samples read 1.0), mean ± standard deviation over the 3 sample seeds: the SWD ratio (the issue's yardstick,
floor spread about 20%) and the binned chi-square ratio (floor spread about 3%; notes/metrics_2d.md). The
validation reading is the last val/swd_ratio and val/chi2_ratio of the run's metrics.csv. Fit times are wall
times of the whole command (start-up, training, validation, plots): time them on a quiet machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from metric_power import YARDSTICK_SAMPLES
from report import publish

from lightning_diffusion.__main__ import main as command

CONFIGS = ["configs/moons.yaml", "configs/moons_edm.yaml", "configs/moons_flow.yaml", "configs/circles.yaml"]
# moons also at the hand loop's second sampler (benchmarks/hand_loop_2d.py); the others at their own only
CELLS = {"moons.yaml": ["DDPMScheduler:1000", "DPMSolverMultistepScheduler:20"]}


def rows(config: str, output_dir: Path, seeds: int) -> list[str]:
    start = time.perf_counter()
    fit = ["fit", "--config", config, "--output_dir", str(output_dir), "--trainer.enable_progress_bar", "false"]
    subprocess.run([sys.executable, "-m", "lightning_diffusion", *fit], check=True)  # timed as a user runs it
    seconds = time.perf_counter() - start
    run = max((output_dir / Path(config).stem).glob("version_*"), key=lambda p: p.stat().st_mtime)
    evaluation = output_dir / "evaluate" / run.parent.name
    options = ["--num_samples", str(YARDSTICK_SAMPLES), "--num_seeds", str(seeds), "--progress", "false"]
    if Path(config).name in CELLS:
        options += ["--cells", f"[{', '.join(CELLS[Path(config).name])}]"]
    command(["evaluate", "--runs", f"[{run}]", "--output_dir", str(evaluation), *options])
    cells = pd.read_csv(next(evaluation.glob("*/eval_*/results.csv"))).to_dict("records")
    final = pd.read_csv(run / "metrics.csv").ffill().iloc[-1]
    chi2_spread = final["val/chi2_floor_std"] / final["val/chi2_floor"]
    reading = f"swd {final['val/swd_ratio']:.2f}, chi2 {final['val/chi2_ratio']:.2f} ± {chi2_spread:.2f}"
    lines = []
    for cell in cells:
        measured = " | ".join(f"{cell[name]:.2f} ± {cell[name + '_std']:.2f}" for name in ("swd_ratio", "chi2_ratio"))
        lines.append(
            f"| {Path(config).name} | {seconds:.0f} s | {cell['sampler']} {cell['steps']} | {measured} | {reading} |"
        )
    return lines


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output_dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="configs_2d_"))
    lines = [line for config in args.configs for line in rows(config, output_dir, args.seeds)]
    table = "\n".join(
        [
            "| config (as shipped) | fit | its shipped sampler | evaluate, 20,000 samples: SWD ratio | chi2 ratio "
            "| its own validation: val/swd_ratio, val/chi2_ratio ± its floor's spread |",
            "| --- | --- | --- | --- | --- | --- |",
            *lines,
        ]
    )
    details = f"each config trained once as shipped (seed 0), {args.seeds} sample seeds; runs in {output_dir}."
    return publish("Shipped 2D configs", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
