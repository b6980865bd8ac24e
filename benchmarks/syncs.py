"""Counting host syncs: every call that makes the host wait for the device (on a GPU), per training batch.

On a CPU nothing waits, but the same calls are made: `Tensor.item`, `bool(tensor)`, `tolist`, `cpu`, `numpy`,
`float(tensor)`, `int(tensor)` and the collectives `torch.distributed.all_reduce`, `all_gather`, `broadcast`. A run
with this callback attributes each call to the training batch in progress (or to validation), with its call site.
"""

from __future__ import annotations

import traceback
from collections import Counter, defaultdict
from typing import Any, Optional

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

TENSOR_METHODS = ("item", "__bool__", "tolist", "cpu", "numpy", "__float__", "__int__")
COLLECTIVES = ("all_reduce", "all_gather", "broadcast")


class SyncCounter(Callback):
    """Counts host syncs per training batch during `fit` (put it first in the callbacks).

    `per_batch[i]` is the number of syncs while training batch i (0-based over the run) was in progress, from its
    `on_train_batch_start` to the next one (so the batch's optimizer step, its logging and every `on_train_batch_end`
    count); syncs inside validation count under "validation"; `sites` names where each came from.
    """

    def __init__(self) -> None:
        self.per_batch: dict[Any, int] = defaultdict(int)
        self.sites: Counter = Counter()
        self._batch: Optional[int] = None
        self._saved: dict[tuple[Any, str], Any] = {}
        self._trainer: Optional[L.Trainer] = None

    def _count(self, name: str) -> None:
        trainer = self._trainer
        if trainer is None or self._batch is None:
            return
        stack = traceback.extract_stack()[:-2]
        innermost_torch = []  # the frames inside torch that made the call, innermost first
        for frame in reversed(stack):
            if "/torch/" not in frame.filename:
                break
            innermost_torch.append(frame.filename)
        if any("/torch/optim/" in name for name in innermost_torch):
            return  # torch.optim's step counters live on the host, also on a GPU (unless capturable/fused): no sync
        if any("/torch/utils/data/" in frame.filename for frame in stack):
            return  # the DataLoader reading and collating host data (in the main process when num_workers is 0)
        key = "validation" if trainer.validating or trainer.sanity_checking else self._batch
        self.per_batch[key] += 1
        for frame in reversed(stack):  # the nearest frame outside torch
            if "/torch/" not in frame.filename and "syncs.py" not in frame.filename:
                where = frame.filename.rsplit("site-packages/", 1)[-1].split("/lightning_diffusion/", 1)[-1]
                self.sites[f"{name} {where}:{frame.lineno}"] += 1
                break

    def _wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        self._saved[(owner, name)] = original
        counter = self

        def counted(*args: Any, **kwargs: Any) -> Any:
            counter._count(label)
            return original(*args, **kwargs)

        setattr(owner, name, counted)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        for name in TENSOR_METHODS:
            self._wrap(torch.Tensor, name, name)
        for name in COLLECTIVES:
            self._wrap(dist, name, f"dist.{name}")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch = trainer.fit_loop.epoch_loop.total_batch_idx

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.teardown_patches()  # what follows (moving the model back to the CPU) is not the training loop's

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.teardown_patches()

    def teardown_patches(self) -> None:
        for (owner, name), original in self._saved.items():
            setattr(owner, name, original)
        self._saved.clear()
        self._batch = None

    def training_counts(self, num_batches: int) -> list[int]:
        return [self.per_batch.get(i, 0) for i in range(num_batches)]


def main(argv: Optional[list[str]] = None) -> str:
    """Host syncs per training step of each config at tiny size on this machine, through the real CLI."""
    import argparse
    import sys
    import tempfile
    from pathlib import Path

    from report import publish

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "tests"))  # the generated datasets of the tests: no download
    from conftest import cpu_overrides
    from fakes import make_dataset, write_idx, write_parquet

    from lightning_diffusion.cli import DiffusionCLI

    parser = argparse.ArgumentParser(description="host syncs per training step, per config")
    parser.add_argument("--configs", nargs="+", default=["moons", "mnist_cond", "celeb_cond"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log_every_n_steps", type=int, default=10)
    parser.add_argument("--notes", default=str(repo / "notes" / "benchmarks.md"), help="'' to print only")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root, celeb = Path(tmp) / "data", Path(tmp) / "celeb"
        write_idx(root / "MNIST" / "raw", num_train=400)
        write_parquet(celeb, make_dataset(genders=[0, 1, 2, 3, 1, 2] * 30))  # 120 kept faces: 14 batches an epoch
        for name in args.configs:
            config = repo / "configs" / f"{name}.yaml"
            counter = SyncCounter()
            run = DiffusionCLI(args=["--config", str(config), *cpu_overrides(config, root, celeb), "--trainer.max_epochs", "-1",
                       "--trainer.max_steps", str(args.steps), "--trainer.log_every_n_steps", str(args.log_every_n_steps),
                       "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
                       "--output_dir", str(Path(tmp) / "outputs")], run=False)
            run.trainer.callbacks.insert(0, counter)
            run.trainer.fit(run.model, run.datamodule)
            counts = counter.training_counts(args.steps)
            logging = [c for i, c in enumerate(counts) if (i + 1) % args.log_every_n_steps == 0]
            other = [c for i, c in enumerate(counts) if (i + 1) % args.log_every_n_steps != 0]
            rows.append(f"| {name} | {args.steps} | {args.log_every_n_steps} | {max(other)} | {max(logging)} | "
                        f"{', '.join(f'{n} x {site}' for site, n in counter.sites.most_common(3))} |")
    table = "\n".join([
        "| config | steps | log every | syncs on other steps (max) | syncs on a logging step (max) | where |",
        "| --- | --- | --- | --- | --- | --- |", *rows])
    details = ("each config at tiny size on generated data (tests/fakes.py), fp32 on the CPU, validation off; a sync "
               "is a call that makes the host wait for a GPU (item, bool, tolist, cpu, numpy, collectives)")
    return publish("Host syncs per training step (benchmarks/syncs.py)", argv, details, table, args.notes)


if __name__ == "__main__":
    print(main())
