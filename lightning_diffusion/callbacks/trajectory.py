"""The 2D trajectory plot of the seeds: forward noising and reverse denoising, one tracked point in green."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_diffusion.callbacks.artifacts import log_figure, real_points, reuses_metrics, should_run
from lightning_diffusion.errors import at_least, check_range
from lightning_diffusion.formulations import Formulation
from lightning_diffusion.plotting import trajectory_figure


def forward_frames(
    formulation: Formulation, x0: Tensor, eps: Tensor, progress: list[float]
) -> list[tuple[float, Tensor]]:
    """The forward process at each point of `progress` (0: data, 1: noise), all with the same noise eps (one noising
    path per point)."""
    return [(1000 * u, formulation.display(formulation.noised(x0, eps, u), u)) for u in progress]


def reverse_frames(
    formulation: Formulation, noise: Tensor, steps: list[tuple[Tensor, Tensor]], x0: Tensor, progress: list[float]
) -> list[tuple[float, Tensor]]:
    """The reverse row, as (1000 * progress, x_t shown in the data's axes): the noise x_T, then the sampler's x_t
    (`steps`: t and x_t after every step) each time it passes one of the `progress` points of the forward row (0:
    data, 1: noise) and, for a sampler that stopped before t = 0, its sample `x0`."""
    thresholds = progress[::-1]  # from noise to data, dropped as the sampler passes them
    frames = [(1000.0, formulation.display(formulation.noised(torch.zeros_like(noise), noise, 1.0), 1.0))]
    for t, x_t in steps:
        u = formulation.progress(float(t))
        if thresholds and u <= thresholds[0] + 1e-9:
            while thresholds and u <= thresholds[0] + 1e-9:
                thresholds.pop(0)
            frames.append((1000 * u, formulation.display(x_t, u)))
    return frames + ([(0.0, x0)] if thresholds else [])  # sigma = 0 and t = 0 need no rescaling


class TrajectoryPlot(Callback):
    """Every `every_n_epochs` validations, plots the forward and the reverse process of a 2D cloud.

    The top row noises held-out points every `timestep_stride` timesteps (of 1000: for EDM and flow matching,
    the same fraction of the way from data to noise); the bottom row denoises noise with the configured sampler,
    showing x_t when the sampler passes the same points. Point `tracked_index` is drawn in green in every panel;
    EDM's samples are shown as x / sqrt(1 + sigma^2), so that every panel shares the axes.

    When the model's sample metrics generate at least `num_points` samples on this device (`val_num_samples`), the
    bottom row follows the first `num_points` of them (`DiffusionModule.validation_samples`, which then keeps them
    and their steps) and is drawn once the metrics are done (`on_validation_end`): the metrics' weights, sampler
    and noise. Otherwise the plot samples its own points.

    Args:
        every_n_epochs: How often, in epochs (the last epoch always draws).
        num_points: Points in the cloud.
        timestep_stride: Timesteps between panels (the seeds used 20-100 for T = 1000).
        tracked_index: The point drawn in green.
        seed: Seed of the forward row's noise, the same every epoch (and of the bottom row's when the plot samples
            its own points).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_points: int = 1000,
        timestep_stride: int = 100,
        tracked_index: int = 0,
        seed: int = 0,
    ) -> None:
        at_least(
            "TrajectoryPlot", 1, every_n_epochs=every_n_epochs, num_points=num_points, timestep_stride=timestep_stride
        )
        check_range("TrajectoryPlot", "tracked_index", tracked_index, 0, num_points - 1)  # one of the points
        self.every_n_epochs, self.num_points, self.timestep_stride = every_n_epochs, num_points, timestep_stride
        self.tracked_index, self.seed = tracked_index, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if reuses_metrics(trainer, pl_module, self.num_points):
            pl_module.validation_samples_kept = max(pl_module.validation_samples_kept, self.num_points)
            pl_module.validation_steps_kept = max(pl_module.validation_steps_kept, self.num_points)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not should_run(trainer, self.every_n_epochs) or reuses_metrics(trainer, pl_module, self.num_points):
            return
        generator = torch.Generator().manual_seed(self.seed)
        x0, progress, forward = self._forward(trainer, pl_module, generator)
        noise = torch.randn((len(x0), *pl_module.sample_shape), generator=generator).to(x0.device)
        steps = []
        generated = pl_module.sample(
            len(x0),
            noise=noise,
            generator=generator,
            callback=lambda i, t, x_t, x0_pred: steps.append((t, x_t.clone())),
            data_space=False,
        )
        self._draw(trainer, forward, reverse_frames(pl_module.formulation, noise, steps, generated, progress))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the module's on_validation_epoch_end, which Lightning calls after the callbacks', wrote the samples
        if not should_run(trainer, self.every_n_epochs) or not reuses_metrics(trainer, pl_module, self.num_points):
            return
        x0, progress, forward = self._forward(trainer, pl_module, torch.Generator().manual_seed(self.seed))
        record, n = pl_module.validation_samples, len(x0)
        if record is None or len(record.samples) < n or not record.steps or len(record.steps[0][1]) < n:
            rank_zero_warn("TrajectoryPlot: the sample metrics kept the steps of fewer points than it shows; no plot.")
            return
        steps = [(t, x_t[:n]) for t, x_t in record.steps]
        reverse = reverse_frames(pl_module.formulation, record.noise[:n], steps, record.samples[:n], progress)
        self._draw(trainer, forward, reverse)

    def _forward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, generator: torch.Generator
    ) -> tuple[Tensor, list[float], list[tuple[float, Tensor]]]:
        """The held-out points, the progress of the panels and the forward row, its noise drawn from `generator`."""
        x0 = real_points(trainer, self.num_points).to(pl_module.device)
        num_panels = max(1000 // self.timestep_stride, 1)  # strides of a 1000-step process, whatever the formulation
        progress = [k / num_panels for k in range(num_panels)]
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        return x0, progress, forward_frames(pl_module.formulation, x0, eps, progress)

    def _draw(self, trainer: L.Trainer, forward: list, reverse: list) -> None:
        fig = trajectory_figure(forward, reverse, self.tracked_index, f"epoch {trainer.current_epoch}")
        log_figure(trainer, "plots/trajectory", fig, f"trajectory_epoch={trainer.current_epoch:04d}.png")
