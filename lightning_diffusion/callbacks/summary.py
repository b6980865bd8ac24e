"""The few lines that end a fit, a validate or a test: where to look, and what the sample metrics say."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_diffusion.checkpoints import newest_saved_checkpoint
from lightning_diffusion.runs import run_dir


def metric_lines(metrics: dict[str, float]) -> list[str]:
    """One line per metric that has a floor (`<name>_floor`, and `<name>_floor_std` its spread): the value, the floor
    ± its spread, the ratio where one is logged, and whether the difference from the floor is larger than the spread."""
    lines = []
    for name in sorted(n for n in metrics if f"{n}_floor" in metrics):
        value, floor, spread = metrics[name], metrics[f"{name}_floor"], metrics.get(f"{name}_floor_std")
        ratio = f", ratio {metrics[f'{name}_ratio']:.3f}" if f"{name}_ratio" in metrics else ""
        if spread is None:
            verdict = "the floor's spread is unknown (one floor set)"
        else:
            larger = "larger" if abs(value - floor) > spread else "not larger"
            verdict = f"the difference {value - floor:+.4g} is {larger} than the spread"
        floor_text = f"{floor:.4g}" + (f" ± {spread:.4g}" if spread is not None else "")
        lines.append(f"  {name} {value:.4g} (floor {floor_text}{ratio}): {verdict}")
    return lines or ["  no sample metrics (val_num_samples 0, or no evaluation ran)"]


def newest_figures(folder: Path) -> list[Path]:
    """The newest PNG of each kind (the name before `_epoch=`) in run_dir/plots and run_dir/samples."""
    newest: dict[str, Path] = {}
    for path in sorted(p for sub in ("plots", "samples") for p in (folder / sub).glob("*.png")):
        kind = f"{path.parent.name}/{path.name.split('_epoch=')[0]}"
        if kind not in newest or path.stat().st_mtime >= newest[kind].stat().st_mtime:
            newest[kind] = path
    return [newest[kind] for kind in sorted(newest)]


class RunSummary(Callback):
    """On rank zero, at the end of `fit`, `validate` and `test`: the final sample metrics beside their floors and
    spreads, the run folder, the newest plots and grids, the checkpoint and the command that samples from it."""

    def __init__(self) -> None:
        self.text = ""  # the last summary, as printed

    def summarize(self, trainer: L.Trainer, stage: str, checkpoint: str | Path | None) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_dir(trainer)
        metrics = {name: float(v) for name, v in trainer.callback_metrics.items() if v.numel() == 1}
        lines = [f"lightning-diffusion {stage} done. Sample metrics:", *metric_lines(metrics)]
        lines.append(f"Run folder: {folder}")
        lines += [f"  {path}" for path in newest_figures(folder)]
        if checkpoint:
            lines.append(f"Checkpoint: {checkpoint}")
            config = folder / "config.yaml"
            if config.is_file():
                lines.append(
                    f"Sample from it: python -m lightning_diffusion predict --config {config} --ckpt_path {checkpoint}"
                )
        self.text = "\n".join(lines)
        rank_zero_info(self.text)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.summarize(trainer, "fit", newest_saved_checkpoint(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.summarize(trainer, "validate", trainer.ckpt_path)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.summarize(trainer, "test", trainer.ckpt_path)
