"""A callback for the DDP tests' subprocesses: the training samples each rank sees, to check the partition."""

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RecordTrainingSamples(Callback):
    """Keeps the x of every training batch and writes them at each epoch end to folder/rank<R>_epoch<E>.pt (one
    tensor, the batches of that epoch in order)."""

    def __init__(self, folder: str) -> None:
        self.folder, self.batches = Path(folder), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch[0].detach().cpu().clone())

    def on_train_epoch_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(torch.cat(self.batches), self.folder / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt")
        self.batches = []
