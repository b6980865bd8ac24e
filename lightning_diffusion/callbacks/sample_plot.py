"""Scatter of generated vs held-out 2D points."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lightning_diffusion.callbacks.common import log_figure, real_points, should_run
from lightning_diffusion.plotting import scatter_figure


class SamplePlot(Callback):
    """Every `every_n_epochs` validations, draws generated against held-out points (data space) to plots/.

    Args:
        every_n_epochs: How often, in epochs (the last epoch always draws).
        num_samples: Points generated and shown.
        seed: Seed of the sampling noise: the same noise every epoch, so plots compare.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 1000, seed: int = 0) -> None:
        self.every_n_epochs, self.num_samples, self.seed = every_n_epochs, num_samples, seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not should_run(trainer, self.every_n_epochs):
            return
        real = real_points(trainer, self.num_samples).to(pl_module.device)
        generated = pl_module.sample(len(real), generator=torch.Generator().manual_seed(self.seed))
        sampler = f"{pl_module.sampler_name}, {pl_module.num_inference_steps} steps"
        fig = scatter_figure(pl_module.to_data_space(real), generated, f"epoch {trainer.current_epoch} ({sampler})")
        log_figure(trainer, "plots/samples", fig, f"samples_epoch={trainer.current_epoch:04d}.png")
