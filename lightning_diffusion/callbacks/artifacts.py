"""How figures and grids reach the run folder and the loggers, and when the callbacks draw; shared by the callbacks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor
from torchvision.utils import save_image

from lightning_diffusion.runs import free_path, run_dir, save_figure, write_atomically


def log_png(trainer: L.Trainer, key: str, path: Path) -> None:
    """Send a PNG to every logger that takes images, under a stable `key`."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            image = np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(key, image, global_step=trainer.global_step, dataformats="HWC")


def log_figure(trainer: L.Trainer, key: str, fig: Figure, filename: str) -> Path:
    """Save `fig` as run_dir/plots/<filename> and send it to the loggers under `key`."""
    path = save_figure(fig, free_path(run_dir(trainer) / "plots" / filename))
    log_png(trainer, key, path)
    return path


def log_grid(trainer: L.Trainer, key: str, grid: Tensor, filename: str) -> Path:
    """Save an image grid (C, H, W) in [0, 1] pixel-exact as run_dir/samples/<filename>, and send it to the loggers."""
    path = free_path(run_dir(trainer) / "samples" / filename)
    write_atomically(path, lambda file: save_image(grid, file, format="png"))
    log_png(trainer, key, path)
    return path


def real_points(trainer: L.Trainer, num_samples: int) -> Tensor:
    """The first `num_samples` validation points (model space).

    A DataLoader iterator draws its seed from the global generator: the RNG is forked so that drawing plots
    leaves the training's random stream as it was (and resumed runs replay it exactly).
    """
    chunks, n = [], 0
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        for batch in trainer.datamodule.val_dataloader():
            x = batch[0] if isinstance(batch, (tuple, list)) else batch["x"] if isinstance(batch, dict) else batch
            chunks.append(x)
            n += len(x)
            if n >= num_samples:
                break
    return torch.cat(chunks)[:num_samples]


def should_run(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """On rank zero, outside the sanity check, every `every_n_epochs` epochs and at the last one (when the run is
    bounded by epochs; `max_epochs: -1` runs, bounded by `max_steps`, draw every `every_n_epochs` only)."""
    if trainer.sanity_checking or not trainer.is_global_zero:
        return False
    epoch, last = trainer.current_epoch + 1, trainer.max_epochs or 0
    return epoch % every_n_epochs == 0 or (last > 0 and epoch >= last) or bool(trainer.fast_dev_run)


def reuses_metrics(trainer: L.Trainer, pl_module: L.LightningModule, num_samples: int) -> bool:
    """Whether the sample metrics at the end of each validation generate at least `num_samples` samples on this rank
    (`val_num_samples`): a plot then shows the first of them (the module's `validation_samples`, written by its
    `on_validation_epoch_end`, which Lightning calls after the callbacks') rather than sampling its own; not where
    the metrics sample with their own sampler (`val_sampler`): the plots keep the model's."""
    if getattr(pl_module, "val_sampling", None):
        return False
    return getattr(pl_module, "hparams", {}).get("val_num_samples", 0) // trainer.world_size >= num_samples
