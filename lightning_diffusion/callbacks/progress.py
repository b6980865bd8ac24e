"""The progress bar, showing the training loss without making the host wait for the device."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from lightning_diffusion.errors import at_least, check_range


class LossProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar with the mean training loss of the last logging interval, redrawn at most every
    `min_interval` seconds during training.

    A metric logged with ``prog_bar=True`` is read on the host after every batch (a sync per step on a GPU); the
    bar shows the float the module read at its logging step (`last_train_loss`) instead. Redraws are paced like
    tqdm's own (`min_interval`), and the epoch's last batch is always drawn.

    Args:
        refresh_rate: Redraw after every this many training batches (at most every `min_interval` seconds).
        process_position: Lightning's: the bar's line, for several bars at once.
        leave: Lightning's: leave the bar of each epoch on the screen.
        min_interval: Seconds between two redraws of the training bar (0: after every `refresh_rate` batches).
    """

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False, min_interval: float = 0.1
    ) -> None:
        at_least("LossProgressBar", 0, refresh_rate=refresh_rate, process_position=process_position)
        check_range("LossProgressBar", "min_interval", min_interval, 0)
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._drawn_at = float("-inf")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if now - self._drawn_at < self.min_interval and batch_idx + 1 < self.total_train_batches:
            return  # the next redraw shows this batch too: the bar's position is the batch index
        self._drawn_at = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "last_train_loss", None)
        if loss is not None:
            metrics["train/loss"] = f"{loss:.4g}"
        return metrics

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Ends the line a bar was drawn on, so that the error's one line starts a line of its own."""
        bars = (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar, self._predict_progress_bar)
        streams = {id(bar.fp): bar.fp for bar in bars if bar is not None and not bar.disable}
        for stream in streams.values():
            stream.write("\n")
            stream.flush()
