"""The 2D trajectory plot of the seeds: forward noising and reverse denoising, one tracked point in green."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_diffusion import diffusion
from lightning_diffusion.callbacks.common import log_figure, real_points, should_run
from lightning_diffusion.plotting import trajectory_figure


def forward_frames(x0: Tensor, eps: Tensor, alphas_cumprod: Tensor, timesteps: list[int]) -> list[tuple[int, Tensor]]:
    """x_t ~ q(x_t | x0) at each timestep, all with the same noise eps (one noising path per point)."""
    frames = []
    for t in timesteps:
        alpha_bar_t = diffusion.alpha_bar_at(alphas_cumprod, torch.full((len(x0),), t, device=x0.device), x0)
        frames.append((t, diffusion.q_sample(x0, eps, alpha_bar_t)))
    return frames


class TrajectoryPlot(Callback):
    """Every `every_n_epochs` validations, plots the forward and the reverse process of a 2D cloud.

    The top row noises held-out points every `timestep_stride` timesteps; the bottom row denoises fresh noise
    with the configured sampler, showing x_t when the sampler passes the same timesteps. Point
    `tracked_index` is drawn in green in every panel.

    Args:
        every_n_epochs: How often, in epochs (the last epoch always draws).
        num_points: Points in the cloud.
        timestep_stride: Timesteps between panels (the seeds used 20-100 for T = 1000).
        tracked_index: The point drawn in green.
        seed: Seed of the noise, the same every epoch.
    """

    def __init__(
        self, every_n_epochs: int = 1, num_points: int = 1000, timestep_stride: int = 100, tracked_index: int = 0, seed: int = 0
    ) -> None:
        self.every_n_epochs, self.num_points, self.timestep_stride = every_n_epochs, num_points, timestep_stride
        self.tracked_index, self.seed = tracked_index, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not should_run(trainer, self.every_n_epochs):
            return
        generator = torch.Generator().manual_seed(self.seed)
        x0 = real_points(trainer, self.num_points).to(pl_module.device)
        num_train_timesteps = pl_module.alphas_cumprod.numel()
        timesteps = list(range(0, num_train_timesteps, self.timestep_stride))
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        forward = forward_frames(x0, eps, pl_module.alphas_cumprod, timesteps)

        noise = torch.randn((len(x0), *pl_module.sample_shape), generator=generator).to(x0.device)
        reverse = [(num_train_timesteps, noise)]
        thresholds = timesteps[::-1]  # a panel each time the sampler passes one of the forward row's timesteps

        def capture(i: int, t: Tensor, x_t: Tensor, x0_pred: Tensor) -> None:
            if thresholds and int(t) <= thresholds[0]:
                while thresholds and int(t) <= thresholds[0]:
                    thresholds.pop(0)
                reverse.append((int(t), x_t.clone()))

        x0_generated = pl_module.sample(len(x0), noise=noise, generator=generator, callback=capture, data_space=False)
        if thresholds:  # few-step samplers stop before t = 0: the last panel is their final sample
            reverse.append((0, x0_generated))
        fig = trajectory_figure(forward, reverse, self.tracked_index, f"epoch {trainer.current_epoch}")
        log_figure(trainer, "plots/trajectory", fig, f"trajectory_epoch={trainer.current_epoch:04d}.png")
