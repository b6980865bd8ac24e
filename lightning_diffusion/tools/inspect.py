"""Research tools over any experiment config: the noise schedule and the forward process on real data.

    python -m lightning_diffusion.tools.inspect --config configs/moons.yaml
    python -m lightning_diffusion.tools.inspect --config configs/mnist.yaml --timesteps 0 50 100 250 500 999

Writes under <output_dir>/<experiment>/inspect/: schedule.png (alpha_bar and log SNR over t), l2_dynamics.png
and l2_dynamics.csv (E||x_t||^2 / d over t measured on real training batches against the theory
alpha_bar E||x0||^2 / d + 1 - alpha_bar), and for images forward_process.png (a few images noised at --timesteps).
Extra arguments after the options are passed to the CLI (e.g. --model.scheduler.init_args.beta_schedule sigmoid).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image

from lightning_diffusion.errors import one_line_errors
from lightning_diffusion.formulations import VP
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.plotting import image_grid, save_figure
from lightning_diffusion.runs import free_path


def l2_dynamics(x0: Tensor, alphas_cumprod: Tensor, timesteps: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """E||x_t||^2 / d at each timestep, measured (one fresh eps per point) and in theory."""
    generator = torch.Generator().manual_seed(seed)
    d = x0[0].numel()
    x0_norm = x0.flatten(1).pow(2).sum(1).mean() / d  # E||x0||^2 / d
    measured, theory = [], []
    for t in timesteps:
        alpha_bar = diffusion.alpha_bar_at(alphas_cumprod, torch.full((len(x0),), t), x0)
        x_t = diffusion.q_sample(x0, torch.randn(x0.shape, generator=generator), alpha_bar)
        measured.append((x_t.flatten(1).pow(2).sum(1).mean() / d).item())
        a = alphas_cumprod[t].item()
        theory.append(a * x0_norm.item() + 1 - a)
    return {"t": np.array(timesteps), "measured": np.array(measured), "theory": np.array(theory)}


def schedule_figure(alphas_cumprod: Tensor, title: str) -> Figure:
    alpha_bar = alphas_cumprod.double()
    t = np.arange(len(alpha_bar))
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(t, alpha_bar.numpy(), label="alpha_bar")
    left.plot(t, (1 - alpha_bar).numpy(), label="1 - alpha_bar")
    left.set_xlabel("t")
    left.legend()
    right.plot(t, torch.log(diffusion.snr(alpha_bar)).numpy())
    right.set_xlabel("t")
    right.set_ylabel("log SNR")
    fig.suptitle(title, fontsize=10)
    return fig


def l2_figure(curves: dict[str, np.ndarray], title: str) -> Figure:
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.plot(curves["t"], curves["theory"], label="theory", color="black")
    ax.plot(curves["t"], curves["measured"], "o", markersize=3, label="measured")
    ax.set_xlabel("t")
    ax.set_ylabel("E||x_t||^2 / d")
    ax.legend()
    ax.set_title(title, fontsize=10)
    return fig


def real_batch(data, num_samples: int) -> Tensor:
    data.prepare_data()
    data.setup("fit")
    chunks, n = [], 0
    for batch in data.train_dataloader():
        chunks.append(batch[0])
        n += len(batch[0])
        if n >= num_samples:
            break
    return torch.cat(chunks)[:num_samples]


def main(argv: list[str] | None = None) -> Path:
    """Entry point; an expected error ends as one line `error: ...` (errors.one_line_errors)."""
    with one_line_errors(sys.argv[1:] if argv is None else argv):
        return _inspect(argv)


def _inspect(argv: list[str] | None) -> Path:
    from lightning_diffusion.cli import DiffusionCLI

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", required=True, action="append", help="experiment config (repeatable)")
    parser.add_argument("--num_samples", type=int, default=2048, help="real training samples to measure on")
    parser.add_argument("--timesteps", type=int, nargs="*", default=[0, 100, 250, 500, 750, 999])
    parser.add_argument("--output_dir", default="outputs")
    args, cli_args = parser.parse_known_args(argv)
    if args.num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, got {args.num_samples}.")

    configs = [arg for path in args.config for arg in ("--config", path)]
    cli = DiffusionCLI(args=[*configs, *cli_args, "--output_dir", args.output_dir], run=False)
    model, data = cli.model, cli.datamodule
    if not isinstance(model.formulation, VP):
        raise ValueError(
            f"inspect draws a VP (DDPM) noise schedule, but this config's formulation is "
            f"{type(model.formulation).__name__}: inspect a config with model.scheduler."
        )
    alphas_cumprod = model.formulation.alphas_cumprod
    outside = [t for t in args.timesteps if not 0 <= t < len(alphas_cumprod)]
    if outside:  # before any work or file
        raise ValueError(
            f"--timesteps {' '.join(map(str, outside))} lie outside the schedule's 0 to {len(alphas_cumprod) - 1} "
            f"(num_train_timesteps {len(alphas_cumprod)}): give timesteps in that range."
        )
    folder = Path(args.output_dir) / cli.config.experiment / "inspect"
    folder.mkdir(parents=True, exist_ok=True)
    scheduler = model.formulation.scheduler
    name = (
        f"{cli.config.experiment}: {type(scheduler).__name__} {scheduler.config.beta_schedule}, T={len(alphas_cumprod)}"
    )
    save_figure(schedule_figure(alphas_cumprod, name), free_path(folder / "schedule.png"))

    x0 = real_batch(data, args.num_samples)
    curves = l2_dynamics(x0, alphas_cumprod, list(range(0, len(alphas_cumprod), 10)))
    save_figure(l2_figure(curves, name), free_path(folder / "l2_dynamics.png"))
    table = np.stack([curves["t"], curves["measured"], curves["theory"]], 1)
    np.savetxt(free_path(folder / "l2_dynamics.csv"), table, delimiter=",", header="t,measured,theory", comments="")

    if x0.ndim == 4:  # images: rows are images, columns the timesteps
        images = x0[:4]
        frames = [
            diffusion.q_sample(
                images,
                torch.randn(images.shape, generator=torch.Generator().manual_seed(0)),
                diffusion.alpha_bar_at(alphas_cumprod, torch.full((len(images),), t), images),
            )
            for t in args.timesteps
        ]
        grid = torch.stack(frames, 1).flatten(0, 1)  # (4 * T, C, H, W), row-major per image
        save_image(
            image_grid(model.to_data_space(grid), nrow=len(args.timesteps)), free_path(folder / "forward_process.png")
        )
    worst = np.abs(curves["measured"] - curves["theory"]).max()
    print(f"Wrote {folder}: max |measured - theory| of E||x_t||^2/d = {worst:.4f} over {len(curves['t'])} timesteps")
    return folder


if __name__ == "__main__":
    main()
