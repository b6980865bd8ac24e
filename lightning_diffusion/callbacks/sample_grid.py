"""Image sample grids (one row per class) and the denoising progression, from fixed noise."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_diffusion.callbacks.artifacts import log_figure, log_grid, should_run
from lightning_diffusion.errors import at_least
from lightning_diffusion.plotting import evenly_spaced, image_grid, progression_figure


class SampleGrid(Callback):
    """Every `every_n_epochs` validations, a grid of samples saved to samples/ and sent to the logger.

    A conditional model gets one row per class (`samples_per_row` samples of class k in row k); an
    unconditional one `num_rows` rows. The noise is drawn once, so grids of different epochs compare. A
    progression figure (plots/) shows x_t and the predicted x0 of the first `progression_images` samples at
    `progression_steps` evenly spaced sampler steps: the image counterpart of the 2D trajectory plot.

    Args:
        every_n_epochs: How often, in epochs (the last epoch always draws).
        samples_per_row: Images per row.
        num_rows: Rows of an unconditional model (a conditional one has one per class).
        progression_steps: Columns of the progression figure (0: no figure).
        progression_images: Samples followed in the progression figure.
        seed: Seed of the fixed noise.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        samples_per_row: int = 8,
        num_rows: int = 8,
        progression_steps: int = 8,
        progression_images: int = 2,
        seed: int = 0,
    ) -> None:
        at_least("SampleGrid", 1, every_n_epochs=every_n_epochs, samples_per_row=samples_per_row, num_rows=num_rows)
        at_least("SampleGrid", 0, progression_steps=progression_steps, progression_images=progression_images)
        self.every_n_epochs, self.samples_per_row, self.num_rows = every_n_epochs, samples_per_row, num_rows
        self.progression_steps, self.progression_images, self.seed = progression_steps, progression_images, seed
        self._noise: Tensor | None = None

    def grid_labels(self, num_classes: int | None) -> Tensor | None:
        """Row k holds class k: labels (K * samples_per_row,), or None for an unconditional model."""
        if not num_classes:
            return None
        return torch.arange(num_classes).repeat_interleave(self.samples_per_row)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not should_run(trainer, self.every_n_epochs):
            return
        labels = self.grid_labels(pl_module.num_classes)
        num_samples = len(labels) if labels is not None else self.num_rows * self.samples_per_row
        if self._noise is None or len(self._noise) != num_samples:
            generator = torch.Generator().manual_seed(self.seed)
            self._noise = torch.randn((num_samples, *pl_module.sample_shape), generator=generator)

        steps = pl_module.num_inference_steps
        keep = set(evenly_spaced(steps, self.progression_steps)) if self.progression_steps else set()
        frames: list[tuple[float, Tensor, Tensor]] = []

        def capture(i: int, t: Tensor, x_t: Tensor, x0_pred: Tensor) -> None:
            if i in keep:
                k = self.progression_images
                frames.append((float(t), pl_module.to_data_space(x_t[:k]), pl_module.to_data_space(x0_pred[:k])))

        samples = pl_module.sample(
            num_samples,
            class_labels=labels,
            noise=self._noise,
            callback=capture,
            generator=torch.Generator().manual_seed(self.seed),
        )
        epoch = trainer.current_epoch
        log_grid(trainer, "samples/grid", image_grid(samples, nrow=self.samples_per_row), f"grid_epoch={epoch:04d}.png")
        if frames:
            fig = progression_figure(frames, f"epoch {epoch}: x_t and predicted x0")
            log_figure(trainer, "plots/progression", fig, f"progression_epoch={epoch:04d}.png")
