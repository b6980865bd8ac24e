"""Scatter of generated vs held-out 2D points."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lightning_diffusion.callbacks.artifacts import log_figure, real_points, reuses_metrics, should_run
from lightning_diffusion.errors import at_least
from lightning_diffusion.plotting import scatter_figure


class SamplePlot(Callback):
    """Every `every_n_epochs` validations, draws generated against held-out points (data space) to plots/.

    When the model's sample metrics generate at least `num_samples` samples on this device (`val_num_samples`), the
    plot shows the first `num_samples` of them (`DiffusionModule.validation_samples`, which then keeps them) once the
    metrics are done
    (`on_validation_end`): the same weights (the EMA's, where there is one), sampler and noise as the logged metrics.
    Otherwise it samples its own points, from the noise of `seed`.

    Args:
        every_n_epochs: How often, in epochs (the last epoch always draws).
        num_samples: Points generated and shown.
        seed: Seed of the sampling noise when the plot samples its own points: the same noise every epoch, so plots
            compare.
    """

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 1000, seed: int = 0) -> None:
        at_least("SamplePlot", 1, every_n_epochs=every_n_epochs, num_samples=num_samples)
        self.every_n_epochs, self.num_samples, self.seed = every_n_epochs, num_samples, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if reuses_metrics(trainer, pl_module, self.num_samples):
            pl_module.validation_samples_kept = max(pl_module.validation_samples_kept, self.num_samples)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if should_run(trainer, self.every_n_epochs) and not reuses_metrics(trainer, pl_module, self.num_samples):
            real = real_points(trainer, self.num_samples).to(pl_module.device)
            generated = pl_module.sample(len(real), generator=torch.Generator().manual_seed(self.seed))
            self._draw(trainer, pl_module, real, generated)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the module's on_validation_epoch_end, which Lightning calls after the callbacks', wrote the samples
        if not should_run(trainer, self.every_n_epochs) or not reuses_metrics(trainer, pl_module, self.num_samples):
            return
        record = pl_module.validation_samples
        if record is None or len(record.samples) < self.num_samples:
            rank_zero_warn("SamplePlot: the sample metrics generated fewer points than it shows; no plot.")
            return
        real = real_points(trainer, self.num_samples).to(pl_module.device)
        self._draw(trainer, pl_module, real, pl_module.to_data_space(record.samples[: len(real)]))

    def _draw(
        self, trainer: L.Trainer, pl_module: L.LightningModule, real: torch.Tensor, generated: torch.Tensor
    ) -> None:
        sampler = f"{pl_module.sampler_name}, {pl_module.num_inference_steps} steps"
        fig = scatter_figure(pl_module.to_data_space(real), generated, f"epoch {trainer.current_epoch} ({sampler})")
        log_figure(trainer, "plots/samples", fig, f"samples_epoch={trainer.current_epoch:04d}.png")
