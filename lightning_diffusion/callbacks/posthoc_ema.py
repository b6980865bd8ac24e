"""Post-hoc EMA (Karras et al. 2024, EDM2, sec. 3): power-function averages of the denoiser's weights and their
snapshots, from which `python -m lightning_diffusion posthoc-ema` reconstructs the average of any length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_diffusion.optim import MAX_SIGMA_REL, power_ema_beta, sigma_rel_to_gamma
from lightning_diffusion.runs import (
    posthoc_ema_snapshot,
    posthoc_ema_snapshots,
    run_dir,
    save_atomically,
    write_atomically,
)


class PostHocEMA(Callback):
    """Tracks a power-function EMA of the denoiser's weights for each relative standard deviation of `sigma_rels`
    (EDM2's eq. 127: after optimizer step t, average <- beta average + (1 - beta) weights with beta = (1 - 1/t)^(gamma
    + 1), the first step copying) and writes both every `snapshot_every_n_steps` steps, and at the end of training,
    to <run>/posthoc_ema/snapshot-step=<t>.pt (the denoiser's weights only, one file with every profile, written
    whole by rank 0). The profiles are in every checkpoint, so a resumed run continues them exactly, and its new run
    folder gets the snapshots of the run it continues.

    The EMA callback, if also given, is separate: its average is the checkpoints' weights (checkpoints/last.ckpt);
    these snapshots only feed `posthoc-ema`, which writes posthoc_ema/sigma_rel=<s>-step=<t>.ckpt beside them.

    Args:
        sigma_rels: The profiles' relative standard deviations (EDM2's 0.05 and 0.10).
        snapshot_every_n_steps: Write the profiles every this many optimizer steps (EDM2: every 8M images).
    """

    def __init__(self, sigma_rels: list[float] | None = None, snapshot_every_n_steps: int = 500) -> None:
        self.sigma_rels = [float(s) for s in (sigma_rels or [0.05, 0.10])]
        if not all(0 < s < MAX_SIGMA_REL for s in self.sigma_rels) or len(set(self.sigma_rels)) < len(self.sigma_rels):
            raise ValueError(
                f"PostHocEMA needs distinct sigma_rels between 0 and 0.28 (gamma > 0), got {self.sigma_rels}: "
                "EDM2 uses [0.05, 0.10]."
            )
        if snapshot_every_n_steps < 1:
            raise ValueError(f"PostHocEMA needs snapshot_every_n_steps >= 1, got {snapshot_every_n_steps}.")
        self.gammas = [sigma_rel_to_gamma(s) for s in self.sigma_rels]
        self.every = snapshot_every_n_steps
        self.profiles: list[dict[str, Tensor]] = []  # per sigma_rel: name -> averaged floating-point parameter
        self.step = 0  # the optimizer steps averaged
        self.snapshot_step = 0  # the step of the newest snapshot

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.profiles = [self._copy(pl_module) for _ in self.sigma_rels]
            self.step = self.snapshot_step = 0

    @staticmethod
    def _copy(pl_module: L.LightningModule) -> dict[str, Tensor]:
        params = pl_module.denoiser.named_parameters()
        return {name: p.detach().float().clone() for name, p in params if p.is_floating_point()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for profile in self.profiles:  # restored from a checkpoint on the CPU
            for name, value in profile.items():
                profile[name] = value.to(pl_module.device)
        if trainer.ckpt_path and trainer.global_rank == 0:
            self.carry_snapshots(Path(trainer.ckpt_path).parent.parent, run_dir(trainer))

    def carry_snapshots(self, resumed: Path, run: Path) -> None:
        """A resumed fit writes a new run folder: the snapshots of the run it continues, up to the checkpoint's step,
        are copied into it (each whole), so that every run folder holds all the snapshots of its training."""
        if resumed.resolve() == run.resolve():
            return
        for step, path in posthoc_ema_snapshots(resumed).items():
            target = posthoc_ema_snapshot(run, step)
            if step <= self.snapshot_step and not target.exists():
                write_atomically(target, lambda file, path=path: file.write(path.read_bytes()))

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step <= self.step:  # a batch that only accumulated gradients
            return
        self.step = trainer.global_step
        current = dict(pl_module.denoiser.named_parameters())
        for gamma, profile in zip(self.gammas, self.profiles, strict=True):
            weights = [current[name].detach().float() for name in profile]
            torch._foreach_lerp_(list(profile.values()), weights, 1.0 - power_ema_beta(gamma, self.step))
        if self.step % self.every == 0:
            self.write_snapshot(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.step > self.snapshot_step:
            self.write_snapshot(trainer, pl_module)

    def write_snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The profiles at this step, with the denoiser's buffers, as one file of the run folder (rank 0)."""
        self.snapshot_step = self.step
        if trainer.global_rank != 0:
            return
        buffers = {name: b.detach().cpu() for name, b in pl_module.denoiser.named_buffers()}
        snapshot = {
            "step": self.step,
            "sigma_rels": self.sigma_rels,
            "gammas": self.gammas,
            "profiles": [{**buffers, **{k: v.cpu() for k, v in p.items()}} for p in self.profiles],
        }
        save_atomically(posthoc_ema_snapshot(run_dir(trainer), self.step), snapshot)

    def state_dict(self) -> dict[str, Any]:
        profiles = [{name: value.cpu() for name, value in profile.items()} for profile in self.profiles]
        return {
            "sigma_rels": self.sigma_rels,
            "step": self.step,
            "snapshot_step": self.snapshot_step,
            "profiles": profiles,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["sigma_rels"] != self.sigma_rels:
            raise ValueError(
                f"The checkpoint's PostHocEMA profiles have sigma_rels {state_dict['sigma_rels']}, this run's "
                f"{self.sigma_rels}: resume with the sigma_rels it was trained with."
            )
        self.step, self.snapshot_step = state_dict["step"], state_dict["snapshot_step"]
        self.profiles = [dict(profile) for profile in state_dict["profiles"]]
