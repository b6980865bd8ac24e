"""The 2D validation's cost and reading at its shipped size and at 20,000 samples with a few-step metric sampler.

    python benchmarks/val_sampler_cost.py outputs/moons/version_0/checkpoints/last.ckpt [N:SAMPLER:STEPS:SEEDS ...]

Validates the checkpoint (its EMA weights, as the fit's validation reads them) through Lightning's validate with
configs/moons.yaml's data, once per setting and sample seed, and prints the wall time of each validation (the
held-out loss and the sample metrics) with val/chi2_ratio and the floor's spread (val/chi2_floor_std / floor).
"""

from __future__ import annotations

import sys
import time

import lightning as L
import yaml

from lightning_diffusion import DiffusionModule
from lightning_diffusion.callbacks import EMA
from lightning_diffusion.data import Toy2DDataModule

SETTINGS = {  # name: (val_num_samples, val_sampler, val_num_inference_steps); None: the model's (DDPM 1000)
    "2,000, DDPM 1000 (before)": (2000, None, None),
    "20,000, DPM-Solver++ 20": (20000, "DPMSolverMultistepScheduler", 20),
    "20,000, DPM-Solver++ 10": (20000, "DPMSolverMultistepScheduler", 10),
}


def parse(spec: str) -> tuple[str, tuple[int, str | None, int | None], int]:
    """`20000:DDPMScheduler:100:3`: 20,000 samples, that sampler and steps, 3 seeds (an empty sampler: the model's)."""
    n, sampler, steps, seeds = spec.split(":")
    return spec, (int(n), sampler or None, int(steps) if steps else None), int(seeds)


def main(path: str, specs: list[str]) -> None:
    init_args = yaml.safe_load(open("configs/moons.yaml"))["data"]["init_args"]
    settings = [parse(spec) for spec in specs] or [(name, setting, 3) for name, setting in SETTINGS.items()]
    for name, (n, sampler, steps), num_seeds in settings:
        for seed in range(num_seeds):
            options = {"val_num_samples": n, "val_sampler": sampler, "val_num_inference_steps": steps}
            model = DiffusionModule.load_from_checkpoint(path, map_location="cpu", sample_seed=seed, **options)
            data = Toy2DDataModule(**init_args | {"num_val_samples": 2 * n})
            trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, callbacks=[EMA(decay=0.995)])  # fmt: skip
            start = time.perf_counter()
            (metrics,) = trainer.validate(model, data, ckpt_path=path, verbose=False)
            seconds = time.perf_counter() - start
            spread = metrics["val/chi2_floor_std"] / metrics["val/chi2_floor"]
            print(f"{name} | seed {seed} | {seconds:.1f} s | chi2_ratio {metrics['val/chi2_ratio']:.3f} | "
                  f"floor {metrics['val/chi2_floor']:.1f} ± {metrics['val/chi2_floor_std']:.1f} ({spread:.1%}) | "
                  f"swd_ratio {metrics['val/swd_ratio']:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
