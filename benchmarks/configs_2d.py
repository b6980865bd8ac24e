"""The shipped 2D configs as a newcomer meets them: each trained once as shipped, timed, and measured on the
independent yardstick with the sampler it ships, beside its own last validation reading.

    python benchmarks/configs_2d.py [--configs configs/moons.yaml ...]

The yardstick (benchmarks/metric_power.py): SWD of 20,000 samples against 20,000 independent draws of the data
distribution over the mean of 8 more such draws (exact samples read 1.0 ± 0.2), mean ± standard deviation over 3
sample seeds; conditional configs sample their classes in turn and the draws have the same classes. The validation
reading is the last val/swd_ratio and val/chi2_ratio of the run's metrics.csv. Fit times include the validations,
on a shared machine: a ratio between rows of one run says more than a number of seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from metric_power import YARDSTICK_SAMPLES, yardstick
from report import publish

from lightning_diffusion import DiffusionModule
from lightning_diffusion.__main__ import main as command
from lightning_diffusion.data.toy2d import Toy2DDataModule

CONFIGS = ["configs/moons.yaml", "configs/moons_edm.yaml", "configs/moons_flow.yaml", "configs/circles.yaml"]


def row(config: str, output_dir: Path, seeds: int) -> str:
    start = time.perf_counter()
    command(["fit", "--config", config, "--output_dir", str(output_dir), "--trainer.enable_progress_bar", "false"])
    seconds = time.perf_counter() - start
    run = max((output_dir / Path(config).stem).glob("version_*"), key=lambda p: p.stat().st_mtime)
    data = Toy2DDataModule(**yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"])
    model = DiffusionModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    labels = None if model.num_classes is None else np.arange(YARDSTICK_SAMPLES) % model.num_classes
    ratios = []
    for seed in range(seeds):
        samples = model.sample(YARDSTICK_SAMPLES, generator=torch.Generator().manual_seed(seed), data_space=False)
        ratios.append(yardstick(data, samples, seed, labels))
    final = pd.read_csv(run / "metrics.csv").ffill().iloc[-1]
    sampler = f"{model.sampler_name} {model.num_inference_steps}"
    chi2_spread = final["val/chi2_floor_std"] / final["val/chi2_floor"]
    reading = f"swd {final['val/swd_ratio']:.2f}, chi2 {final['val/chi2_ratio']:.2f} ± {chi2_spread:.2f}"
    ratio = f"{np.mean(ratios):.2f} ± {np.std(ratios, ddof=1):.2f}"
    return f"| {Path(config).name} | {seconds:.0f} s | {sampler} | {ratio} | {reading} |"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output_dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="configs_2d_"))
    lines = [row(config, output_dir, args.seeds) for config in args.configs]
    table = "\n".join(
        [
            "| config (as shipped) | fit | its shipped sampler | 20,000 samples, independent yardstick (SWD ratio) "
            "| its own validation: val/swd_ratio, val/chi2_ratio ± its floor's spread |",
            "| --- | --- | --- | --- | --- |",
            *lines,
        ]
    )
    details = f"each config trained once as shipped (seed 0), {args.seeds} sample seeds; runs in {output_dir}."
    return publish("Shipped 2D configs", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
