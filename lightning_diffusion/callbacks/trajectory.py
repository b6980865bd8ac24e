"""The 2D trajectory plot of the seeds: forward noising and reverse denoising, one tracked point in green."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_diffusion.callbacks.artifacts import log_figure, real_points, should_run
from lightning_diffusion.formulations import Formulation
from lightning_diffusion.plotting import trajectory_figure


def forward_frames(
    formulation: Formulation, x0: Tensor, eps: Tensor, progress: list[float]
) -> list[tuple[float, Tensor]]:
    """The forward process at each point of `progress` (0: data, 1: noise), all with the same noise eps (one noising
    path per point)."""
    return [(1000 * u, formulation.display(formulation.noised(x0, eps, u), u)) for u in progress]


class ReverseFrames:
    """A step callback that keeps x_t (of the first `num_points` samples) each time the sampler passes one of the
    `progress` points of the forward row (0: data, 1: noise), as (1000 * progress, x_t shown in the data's axes)."""

    def __init__(self, formulation: Formulation, progress: list[float], num_points: int) -> None:
        self.formulation, self.num_points = formulation, num_points
        self.thresholds = progress[::-1]  # from noise to data, popped as the sampler passes them
        self.frames: list[tuple[float, Tensor]] = []

    def __call__(self, i: int, t: Tensor, x_t: Tensor, x0_pred: Tensor) -> None:
        u = self.formulation.progress(float(t))
        if self.thresholds and u <= self.thresholds[0] + 1e-9:
            while self.thresholds and u <= self.thresholds[0] + 1e-9:
                self.thresholds.pop(0)
            self.frames.append((1000 * u, self.formulation.display(x_t[: self.num_points].clone(), u)))

    def panels(self, noise: Tensor, x0: Tensor) -> list[tuple[float, Tensor]]:
        """The reverse row: the noise x_T, the kept frames and, for a sampler that stopped before t = 0, its sample."""
        start = self.formulation.display(self.formulation.noised(torch.zeros_like(noise), noise, 1.0), 1.0)
        end = [(0.0, x0)] if self.thresholds else []  # sigma = 0 and t = 0 need no rescaling
        return [(1000.0, start), *self.frames, *end]


class TrajectoryPlot(Callback):
    """Every `every_n_epochs` validations, plots the forward and the reverse process of a 2D cloud.

    The top row noises held-out points every `timestep_stride` timesteps (of 1000: for EDM and flow matching,
    the same fraction of the way from data to noise); the bottom row denoises noise with the configured sampler,
    showing x_t when the sampler passes the same points. Point `tracked_index` is drawn in green in every panel;
    EDM's samples are shown as x / sqrt(1 + sigma^2), so that every panel shares the axes.

    When the model generates at least `num_points` samples for its sample metrics at the end of the validation
    (`val_num_samples`), the bottom row follows the first `num_points` of those as they are generated
    (`DiffusionModule.observe_evaluation`) and is drawn once the metrics are done (`on_validation_end`): the
    metrics' weights, sampler and noise, without sampling twice. Otherwise the plot samples its own points.

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
        self.every_n_epochs, self.num_points, self.timestep_stride = every_n_epochs, num_points, timestep_stride
        self.tracked_index, self.seed = tracked_index, seed
        self._observed: tuple[ReverseFrames, list[tuple[float, Tensor]]] | None = None  # (frames, forward row)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # callbacks run before the module's on_validation_epoch_end, which generates the metrics' samples
        self._observed = None
        if not should_run(trainer, self.every_n_epochs):
            return
        generator = torch.Generator().manual_seed(self.seed)
        x0 = real_points(trainer, self.num_points).to(pl_module.device)
        formulation = pl_module.formulation
        num_panels = max(1000 // self.timestep_stride, 1)  # strides of a 1000-step process, whatever the formulation
        progress = [k / num_panels for k in range(num_panels)]
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        forward = forward_frames(formulation, x0, eps, progress)
        frames = ReverseFrames(formulation, progress, len(x0))
        count = getattr(pl_module, "evaluation_sample_count", None)
        if count is not None and count() >= len(x0):
            pl_module.observe_evaluation(frames)  # drawn at on_validation_end
            self._observed = (frames, forward)
            return
        noise = torch.randn((len(x0), *pl_module.sample_shape), generator=generator).to(x0.device)
        x0_generated = pl_module.sample(len(x0), noise=noise, generator=generator, callback=frames, data_space=False)
        self._draw(trainer, forward, frames.panels(noise, x0_generated))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._observed is None:
            return
        (frames, forward), self._observed = self._observed, None
        samples, noise = pl_module.evaluation_samples, pl_module.evaluation_noise
        if samples is None or noise is None or not frames.frames:
            rank_zero_warn("TrajectoryPlot: the model kept no evaluation samples of this validation; no plot drawn.")
            return
        n = frames.num_points
        self._draw(trainer, forward, frames.panels(noise[:n], samples[:n]))

    def _draw(self, trainer: L.Trainer, forward: list, reverse: list) -> None:
        fig = trajectory_figure(forward, reverse, self.tracked_index, f"epoch {trainer.current_epoch}")
        log_figure(trainer, "plots/trajectory", fig, f"trajectory_epoch={trainer.current_epoch:04d}.png")
