"""`validate` and `test` results as JSON in the run folder, with the sampling choices that produced them."""

from __future__ import annotations

import json

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_diffusion.runs import free_path, run_dir


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
        path = free_path(run_dir(trainer) / f"metrics_{stage}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
        rank_zero_info(f"Wrote {stage} metrics to {path}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, "test")
