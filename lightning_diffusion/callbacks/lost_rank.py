"""A lost rank or a hung collective, said in one line by the ranks that survive it, with the way to go on."""

from __future__ import annotations

import os
import signal
import time

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from lightning_diffusion.checkpoints import newest_saved_checkpoint
from lightning_diffusion.errors import check_range
from lightning_diffusion.lightning_private import child_processes

_LOST = ("connection reset", "connection closed", "broken pipe", "socket closed", "remote process exited")
_TIMEOUT = ("timed out", "timeout", "watchdog caught collective operation")


def collective_failure(exception: BaseException) -> str | None:
    """ "lost" when a collective failed because a peer went away, "timeout" when it waited past the process group's
    timeout (gloo and NCCL say both in their messages), None for any other exception."""
    if not isinstance(exception, (dist.DistError, RuntimeError)):
        return None
    text = str(exception).lower()
    if isinstance(exception, (dist.DistBackendError, dist.DistStoreError)) or "gloo" in text or "nccl" in text:
        if any(word in text for word in _TIMEOUT):
            return "timeout"
        if any(word in text for word in _LOST) or isinstance(exception, dist.DistNetworkError):
            return "lost"
    return None


class LostRank(Callback):
    """When a collective fails because another rank died (out of memory, the OOM killer, a lost node) or hung past
    the collective timeout, the surviving ranks end with one sentence instead of the backend's traceback: which
    rank was lost where this process can tell (rank 0 sees how the ranks it launched ended; another rank sees its
    launcher, rank 0, gone), the newest checkpoint, and `--ckpt_path last`. Rank 0 ends the ranks it launched that
    still wait in a collective, so nothing hangs until the timeout; the error leaves through errors.one_line_errors
    with exit status 1.

    Args:
        timeout: The collective timeout in seconds, named in the sentence (the CLI's --collective_timeout).
    """

    def __init__(self, timeout: float | None = None) -> None:
        check_range("LostRank", "timeout", timeout, 0, low_open=True)
        self.timeout = timeout
        self._launcher_pid = os.getppid()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._launcher_pid = os.getppid()  # on a rank Lightning launched: rank 0's process

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        failure = collective_failure(exception)
        if failure is None or trainer.world_size < 2:
            return
        waited = f"--collective_timeout ({self.timeout:g} s)" if self.timeout else "the collective timeout"
        if failure == "timeout" and isinstance(exception, dist.DistStoreError):  # at the start: the rendezvous
            what = f"the {trainer.world_size} ranks did not all join the process group within {waited}"
            check = "check that every rank started (a slow start needs a longer --collective_timeout)"
        elif failure == "timeout":
            what = f"a collective operation waited longer than {waited} at step {trainer.global_step}"
            check = "a rank hangs or works alone that long (raise --collective_timeout if it must)"
        else:
            what = f"{self._lost_rank(trainer)} was lost at step {trainer.global_step}"
            check = "check that rank's log (out of memory? a lost node?)"
        checkpoint = newest_saved_checkpoint(trainer)
        saved = f"the newest checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved yet"
        resume = " with --ckpt_path last" if checkpoint else ""
        exception.one_line = f"{what}: {saved}; {check} and rerun the same command{resume}."
        self._end_waiting_ranks(trainer)

    def _lost_rank(self, trainer: L.Trainer) -> str:
        if trainer.global_rank != 0 and os.getppid() != self._launcher_pid:
            return "rank 0"
        children = child_processes(trainer)  # on rank 0: the ranks it launched on this node, 1, 2, ...
        deadline = time.monotonic() + 2.0  # a killed rank's exit reaches its parent within moments
        while children and time.monotonic() < deadline:
            ended = [(rank, proc.returncode) for rank, proc in enumerate(children, 1) if proc.poll() is not None]
            if any(code for _, code in ended):
                rank, code = next((rank, code) for rank, code in ended if code)
                how = f"ended by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                return f"rank {rank} ({how})"
            time.sleep(0.05)
        return "a rank"

    @staticmethod
    def _end_waiting_ranks(trainer: L.Trainer) -> None:
        for proc in child_processes(trainer):
            if proc.poll() is None:
                proc.kill()
