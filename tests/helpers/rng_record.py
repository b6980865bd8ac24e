"""A callback for the DDP tests' subprocesses (kept out of fakes.py, which conftest loads before Lightning may be
imported: importing Lightning there keeps its log records from pytest's caplog)."""

import hashlib
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RecordRngState(Callback):
    """Writes a fingerprint of the global torch random state at the start of every training batch to
    folder/rank<R>.txt, one line per step: ranks that draw the same stream write the same lines."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.folder.mkdir(parents=True, exist_ok=True)
        fingerprint = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as file:
            file.write(f"{fingerprint}\n")
