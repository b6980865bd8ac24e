"""`predict` output: the generated samples, in data space, as samples.npz in the run folder."""

from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lightning_diffusion.callbacks.common import free_path, run_dir


class SampleWriter(BasePredictionWriter):
    """Writes every sample that `predict` generated to run_dir/samples.npz (arrays ``samples``, ``class_labels``).

    Args:
        filename: Name of the file in the run folder (a -1, -2, ... suffix is added rather than overwrite).
    """

    def __init__(self, filename: str = "samples.npz") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        if not predictions:
            return
        arrays = {"samples": torch.cat([p["samples"] for p in predictions]).numpy()}
        if predictions[0]["class_labels"] is not None:
            arrays["class_labels"] = torch.cat([p["class_labels"] for p in predictions]).numpy()
        name = self.filename if trainer.world_size == 1 else f"{self.filename[:-4]}_rank{trainer.global_rank}.npz"
        path = free_path(run_dir(trainer) / name)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        rank_zero_info(f"Wrote {len(arrays['samples'])} samples to {path}")
