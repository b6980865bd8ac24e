"""What `predict`, `validate` and `test` leave in the run folder: samples.npz (and PNG grids of images) and
metrics_<stage>.json; and metrics_fit.json, which says whether the fit finished."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info
from torchvision.utils import save_image

from lightning_diffusion.checkpoints import newest_saved_checkpoint
from lightning_diffusion.errors import check_range
from lightning_diffusion.plotting import image_grid
from lightning_diffusion.runs import FIT_RECORD, free_path, run_dir, write_atomically


def sampling_record(module: L.LightningModule) -> dict[str, np.ndarray]:
    """What made the samples, as 0-d arrays of samples.npz (also where the config left the sampler to the
    formulation): ``sampler``, ``num_inference_steps``, ``guidance_scale``."""
    return {
        "sampler": np.array(module.sampler_name),
        "num_inference_steps": np.array(module.num_inference_steps),
        "guidance_scale": np.array(float(module.hparams.guidance_scale)),
    }


class SampleWriter(BasePredictionWriter):
    """Writes every sample that `predict` generated to run_dir/samples.npz: ``samples`` (2D points as float32;
    images as uint8 (N, H, W, C)), ``class_labels`` and the sampling choices (`sampling_record`); images also as PNG
    grids of `grid_size` samples. Each file appears complete or not at all, and the grids only with their samples.npz.

    Args:
        filename: Name of the .npz file in the run folder (a -1, -2, ... suffix is added rather than overwrite).
        grid_size: Images per PNG grid (0: no grids).
    """

    def __init__(self, filename: str = "samples.npz", grid_size: int = 100) -> None:
        super().__init__(write_interval="epoch")
        check_range("SampleWriter", "grid_size", grid_size, 0)
        self.filename, self.grid_size = filename, grid_size

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        parts = {key: [p[key] for p in predictions] for key in ("samples", "class_labels", "indices")}
        if trainer.world_size > 1:  # every rank sends its samples to rank zero, which writes one set of files
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, parts)
            if not trainer.is_global_zero:
                return
            parts = {key: [t for rank in gathered for t in rank[key]] for key in parts}
        if not parts["samples"]:
            return
        indices = torch.cat(parts["indices"])
        # sorted by sample index; DistributedSampler repeats a few requests to even out the ranks: keep one of each
        position = {int(i): k for k, i in enumerate(indices)}
        order = torch.tensor([position[i] for i in sorted(position)])
        samples = torch.cat(parts["samples"])[order]
        arrays = {"samples": samples.numpy(), **sampling_record(pl_module)}
        if parts["class_labels"][0] is not None:
            arrays["class_labels"] = torch.cat(parts["class_labels"])[order].numpy()
        folder = run_dir(trainer)
        written: list[Path] = []
        try:
            if samples.ndim == 4:  # images (N, C, H, W) in [0, 1]
                images = samples.clamp(0, 1)
                arrays["samples"] = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                # conditional requests cycle through the classes: one column per class
                nrow = pl_module.num_classes or int(math.ceil(math.sqrt(min(self.grid_size, len(images)))))
                for k, start in enumerate(range(0, len(images), self.grid_size or len(images) + 1)):
                    grid = image_grid(images[start : start + self.grid_size], nrow=nrow)
                    path = free_path(folder / f"samples_grid_{k:03d}.png")
                    written.append(write_atomically(path, lambda file, grid=grid: save_image(grid, file, format="png")))
            path = free_path(folder / self.filename)
            write_atomically(path, lambda file: np.savez(file, **arrays))
        except BaseException:  # also a second Ctrl-C: no grids without their samples
            for grid_path in written:
                grid_path.unlink(missing_ok=True)
            raise
        rank_zero_info(f"Wrote {len(samples)} samples to {path}")


class MetricsWriter(Callback):
    """After `validate` or `test` (not the validations inside `fit`), writes run_dir/metrics_<stage>.json: every
    logged metric (already reduced over ranks), the sampler, its steps, the guidance scale, the number of samples the
    sample metrics used and the checkpoint (the sampling fields are null for models that do not sample)."""

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        hparams = pl_module.hparams
        record = {
            "stage": stage,
            "checkpoint": trainer.ckpt_path,
            # what sampled, also where the config left it to the formulation (the hparams hold None there)
            "sampler": getattr(pl_module, "sampler_name", hparams.get("sampler")),
            "num_inference_steps": getattr(pl_module, "num_inference_steps", hparams.get("num_inference_steps")),
            "guidance_scale": hparams.get("guidance_scale"),
            # the samples the sample metrics used (val_num_samples, rounded down to a multiple of the ranks)
            "num_samples": getattr(pl_module, "evaluation_num_samples", None),
            "metrics": {name: float(value) for name, value in trainer.callback_metrics.items()},
        }
        path = write_atomically(free_path(run_dir(trainer) / f"metrics_{stage}.json"), json.dumps(record, indent=2))
        rank_zero_info(f"Wrote {stage} metrics to {path}")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_fit(trainer, finished=False)  # what a killed or stopped run leaves

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_fit(trainer, finished=True)

    def _write_fit(self, trainer: L.Trainer, finished: bool) -> None:
        """run_dir/metrics_fit.json: whether the fit finished (false from its start until its end: a run killed or
        stopped by a signal says false), its step and epoch, the newest checkpoint and the last logged metrics."""
        if not trainer.is_global_zero:
            return
        record = {
            "stage": "fit",
            "finished": finished,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "checkpoint": str(newest_saved_checkpoint(trainer) or "") or None,
            "metrics": {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1},
        }
        write_atomically(run_dir(trainer) / FIT_RECORD, json.dumps(record, indent=2))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")
