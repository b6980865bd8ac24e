"""The noise schedule of an experiment's config and its forward process on the real data.

    python -m lightning_diffusion inspect --config configs/moons.yaml
    python -m lightning_diffusion inspect --config configs/mnist.yaml --timesteps "[0, 50, 100, 250, 500, 999]"

Writes under <output_dir>/<experiment>/inspect/: schedule.png (alpha_bar and log SNR over t), l2_dynamics.png
and l2_dynamics.csv (E||x_t||^2 / d over t measured on real training batches against the theory
alpha_bar E||x0||^2 / d + 1 - alpha_bar), and for images forward_process.png (a few images noised at --timesteps).
Every option of the training commands applies (e.g. --model.scheduler.init_args.beta_schedule sigmoid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image

from lightning_diffusion.cli import DiffusionCLI
from lightning_diffusion.data.base import DiffusionDataModule
from lightning_diffusion.errors import PROGRAM, one_line_errors
from lightning_diffusion.formulations import VP
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.model.module import DiffusionModule
from lightning_diffusion.plotting import image_grid
from lightning_diffusion.runs import free_path, save_figure, write_atomically

COMMAND = f"{PROGRAM} inspect"


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


def real_batch(data: DiffusionDataModule, num_samples: int) -> Tensor:
    data.prepare_data()
    data.setup("fit")
    chunks, n = [], 0
    for batch in data.train_dataloader():
        chunks.append(batch[0])
        n += len(batch[0])
        if n >= num_samples:
            break
    return torch.cat(chunks)[:num_samples]


class InspectCLI(DiffusionCLI):
    """The training CLI without a subcommand (an experiment's --config and any of its options), with inspect's own."""

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        """`args` are the command line after `inspect` (LightningCLI warns when given args beside a command line)."""
        self.config = parser.parse_args(args)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--num_samples", type=int, default=2048, help="Real training samples to measure on.")
        parser.add_argument(
            "--timesteps",
            type=list[int],
            default=[0, 100, 250, 500, 750, 999],
            help="Images: the timesteps of the forward-process grid.",
        )


def main(argv: list[str]) -> Path:
    """`python -m lightning_diffusion inspect --config ...`; an expected error ends as one line `error: ...`."""
    with one_line_errors(argv, COMMAND):
        description = __doc__.strip().splitlines()[0]
        cli = InspectCLI(args=argv, run=False, parser_kwargs={"prog": COMMAND, "description": description})
        return inspect_schedule(cli.model, cli.datamodule, cli.config)


def inspect_schedule(model: DiffusionModule, data: DiffusionDataModule, config: Namespace) -> Path:
    """Draws the noise schedule of `model` and measures its forward process on `data`; `config` is InspectCLI's."""
    if config.num_samples < 1:
        raise ValueError(f"--num_samples must be at least 1, got {config.num_samples}.")
    if not isinstance(model.formulation, VP):
        raise ValueError(
            f"inspect draws a VP (DDPM) noise schedule, but this config's formulation is "
            f"{type(model.formulation).__name__}: inspect a config with model.scheduler."
        )
    alphas_cumprod = model.formulation.alphas_cumprod
    outside = [t for t in config.timesteps if not 0 <= t < len(alphas_cumprod)]
    if outside:  # before any work or file
        raise ValueError(
            f"--timesteps {' '.join(map(str, outside))} lie outside the schedule's 0 to {len(alphas_cumprod) - 1} "
            f"(num_train_timesteps {len(alphas_cumprod)}): give timesteps in that range."
        )
    folder = Path(config.output_dir) / config.experiment / "inspect"
    scheduler = model.formulation.scheduler
    name = f"{config.experiment}: {type(scheduler).__name__} {scheduler.config.beta_schedule}, T={len(alphas_cumprod)}"
    save_figure(schedule_figure(alphas_cumprod, name), free_path(folder / "schedule.png"))

    x0 = real_batch(data, config.num_samples)
    curves = l2_dynamics(x0, alphas_cumprod, list(range(0, len(alphas_cumprod), 10)))
    save_figure(l2_figure(curves, name), free_path(folder / "l2_dynamics.png"))
    table = np.stack([curves["t"], curves["measured"], curves["theory"]], 1)
    write_atomically(
        free_path(folder / "l2_dynamics.csv"),
        lambda file: np.savetxt(file, table, delimiter=",", header="t,measured,theory", comments=""),
    )

    if x0.ndim == 4:  # images: rows are images, columns the timesteps
        images = x0[:4]
        frames = [
            diffusion.q_sample(
                images,
                torch.randn(images.shape, generator=torch.Generator().manual_seed(0)),
                diffusion.alpha_bar_at(alphas_cumprod, torch.full((len(images),), t), images),
            )
            for t in config.timesteps
        ]
        grid = image_grid(model.to_data_space(torch.stack(frames, 1).flatten(0, 1)), nrow=len(config.timesteps))
        write_atomically(free_path(folder / "forward_process.png"), lambda file: save_image(grid, file, format="png"))
    worst = np.abs(curves["measured"] - curves["theory"]).max()
    print(f"Wrote {folder}: max |measured - theory| of E||x_t||^2/d = {worst:.4f} over {len(curves['t'])} timesteps")
    return folder
