"""A rank that hangs, as a deadlocked data loader or a stuck device would: `Hang(rank, step)` sleeps an hour at the
start of that training step on that rank (the others wait for it in the next collective)."""

import time

from lightning.pytorch.callbacks import Callback


class Hang(Callback):
    def __init__(self, rank: int = 1, step: int = 5) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            time.sleep(3600)
