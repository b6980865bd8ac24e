"""The 2D trajectory plot of the seeds: forward noising and reverse denoising, one tracked point in green."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_diffusion.formulations import Formulation
from lightning_diffusion.callbacks.common import log_figure, real_points, should_run
from lightning_diffusion.plotting import trajectory_figure


def forward_frames(formulation: Formulation, x0: Tensor, eps: Tensor, progress: list[float]) -> list[tuple[float, Tensor]]:
    """The forward process at each point of `progress` (0: data, 1: noise), all with the same noise eps (one noising
    path per point)."""
    return [(1000 * u, formulation.display(formulation.noised(x0, eps, u), u)) for u in progress]


class TrajectoryPlot(Callback):
    """Every `every_n_epochs` validations, plots the forward and the reverse process of a 2D cloud.

    The top row noises held-out points every `timestep_stride` timesteps (of 1000: for EDM and flow matching,
    the same fraction of the way from data to noise); the bottom row denoises fresh noise with the configured
    sampler, showing x_t when the sampler passes the same points. Point `tracked_index` is drawn in green in every
    panel; EDM's samples are shown as x / sqrt(1 + sigma^2), so that every panel shares the axes.

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
        formulation = pl_module.formulation
        num_panels = max(1000 // self.timestep_stride, 1)  # strides of a 1000-step process, whatever the formulation
        progress = [k / num_panels for k in range(num_panels)]
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        forward = forward_frames(formulation, x0, eps, progress)

        noise = torch.randn((len(x0), *pl_module.sample_shape), generator=generator).to(x0.device)
        reverse = [(1000.0, formulation.display(formulation.noised(torch.zeros_like(noise), noise, 1.0), 1.0))]
        thresholds = progress[::-1]  # a panel each time the sampler passes one of the forward row's points

        def capture(i: int, t: Tensor, x_t: Tensor, x0_pred: Tensor) -> None:
            u = formulation.progress(float(t))
            if thresholds and u <= thresholds[0] + 1e-9:
                while thresholds and u <= thresholds[0] + 1e-9:
                    thresholds.pop(0)
                reverse.append((1000 * u, formulation.display(x_t.clone(), u)))

        x0_generated = pl_module.sample(len(x0), noise=noise, generator=generator, callback=capture, data_space=False)
        if thresholds:  # few-step samplers stop before t = 0: the last panel is their final sample
            reverse.append((0.0, x0_generated))  # sigma = 0 and t = 0 need no rescaling
        fig = trajectory_figure(forward, reverse, self.tracked_index, f"epoch {trainer.current_epoch}")
        log_figure(trainer, "plots/trajectory", fig, f"trajectory_epoch={trainer.current_epoch:04d}.png")
