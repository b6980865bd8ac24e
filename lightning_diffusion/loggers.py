"""Experiment tracking that never blocks: W&B online with credentials, offline without; the full config logged."""

from __future__ import annotations

import netrc
import os
from typing import Any

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def wandb_credentials() -> bool:
    """Whether W&B can log in without asking: WANDB_API_KEY, or an api.wandb.ai entry in ~/.netrc (`wandb login`)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger that never shows a login prompt.

    Online when credentials exist (WANDB_API_KEY or `wandb login`), otherwise offline, saying so in one line;
    `WANDB_MODE=offline` also forces offline. Offline runs are uploaded later with `wandb sync <run folder>`.

    Args:
        project: W&B project.
        name: Run name (default: the local run folder, <experiment>/version_N).
        group: Run group; the CLI sets the experiment name, so that runs of one experiment compare side by side.
        tags: Run tags; the CLI adds the experiment name.
        offline: Force offline (``True``) or online (``False``); ``None`` decides from the credentials.
        save_dir: Where the local W&B files go; the CLI puts them under <output_dir>/<experiment>.
        log_model: Upload checkpoints as W&B artifacts (see Lightning's WandbLogger).
        entity: W&B entity (user or team).
    """

    def __init__(
        self,
        project: str = "lightning-diffusion",
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        offline: bool | None = None,
        save_dir: str = "outputs",
        log_model: bool = False,
        entity: str | None = None,
        **kwargs: Any,
    ) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_credentials()
            if offline:
                rank_zero_info(
                    "W&B: no credentials (set WANDB_API_KEY or run `wandb login`), logging offline to "
                    f"{save_dir}/wandb; upload later with `wandb sync`."
                )
        os.makedirs(save_dir, exist_ok=True)
        self.given_name = name
        super().__init__(
            project=project,
            name=name,
            group=group,
            tags=tags,
            offline=offline,
            save_dir=save_dir,
            log_model=log_model,
            entity=entity,
            **kwargs,
        )


class SaveConfig(SaveConfigCallback):
    """Saves the resolved config as config.yaml in the run folder and as the config of every W&B run."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
        for logger in trainer.loggers:
            if isinstance(logger, _WandbLogger):
                logger.experiment.config.update(config, allow_val_change=True)
