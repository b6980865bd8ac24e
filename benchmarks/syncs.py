"""Counting host syncs: every call that makes the host wait for the device (on a GPU), per training batch.

On a CPU nothing waits, but the same calls are made: `Tensor.item`, `bool(tensor)`, `tolist`, `cpu`, `numpy`,
`float(tensor)`, `int(tensor)` and the collectives `torch.distributed.all_reduce`, `all_gather`, `broadcast`. A run
with this callback attributes each call to the training batch in progress (or to validation), with its call site.
"""

from __future__ import annotations

import importlib.util
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import yaml
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
        self._batch: int | None = None
        self._saved: dict[tuple[Any, str], Any] = {}
        self._trainer: L.Trainer | None = None

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

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
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


class CudaSyncCounter(Callback):
    """CUDA's own count of host syncs per training batch, on a GPU: `torch.cuda.set_sync_debug_mode("warn")` makes
    every synchronizing CUDA call (a copy to the host, a stream or device synchronize) warn, whatever Python code made
    it, so this sees what the method wrappers of SyncCounter would miss (a boolean mask, `nonzero`, a copy into a host
    tensor). `per_batch` as in SyncCounter; syncs in validation are not counted."""

    MESSAGE = "called a synchronizing CUDA operation"

    def __init__(self) -> None:
        self.per_batch: dict[int, int] = defaultdict(int)
        self._batch: int | None = None
        self._caught: warnings.catch_warnings | None = None
        self._record: list[warnings.WarningMessage] = []
        self._others: list[warnings.WarningMessage] = []  # every other warning, shown again at the end
        self._mode = 0  # the sync debug mode before
        self._in_validation = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type != "cuda":
            return
        self._caught = warnings.catch_warnings(record=True)
        self._record = self._caught.__enter__()
        warnings.simplefilter("always")  # every occurrence, not the first per call site
        self._mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")

    def _attribute(self) -> None:
        syncs = [w for w in self._record if self.MESSAGE in str(w.message)]
        if self._batch is not None and not self._in_validation:
            self.per_batch[self._batch] += len(syncs)
        self._others += [w for w in self._record if self.MESSAGE not in str(w.message)]
        self._record.clear()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._attribute()
        self._in_validation = False
        self._batch = trainer.fit_loop.epoch_loop.total_batch_idx

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._attribute()
        self._in_validation = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.stop()

    def stop(self) -> None:
        if self._caught is None:
            return
        self._attribute()
        torch.cuda.set_sync_debug_mode(self._mode)
        self._caught.__exit__(None, None, None)
        self._caught = None
        for w in self._others:  # under the filters of before, as if never caught
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        self._others.clear()

    def training_counts(self, num_batches: int) -> list[int]:
        return [self.per_batch.get(i, 0) for i in range(num_batches)]


def count_syncs(config: Path, overrides: list[str], steps: int, log_every_n_steps: int, output_dir: Path):
    """Fits `config` through the real CLI for `steps` steps without validation, with both counters: (SyncCounter,
    CudaSyncCounter, training batches per epoch)."""
    from lightning_diffusion.cli import DiffusionCLI

    python, cuda = SyncCounter(), CudaSyncCounter()
    run = DiffusionCLI(
        args=[
            "--config",
            str(config),
            *overrides,
            "--trainer.max_epochs",
            "-1",
            "--trainer.max_steps",
            str(steps),
            "--trainer.log_every_n_steps",
            str(log_every_n_steps),
            "--trainer.limit_val_batches",
            "0",
            "--trainer.num_sanity_val_steps",
            "0",
            "--output_dir",
            str(output_dir),
        ],
        run=False,
    )
    run.trainer.callbacks[:0] = [python, cuda]
    run.trainer.fit(run.model, run.datamodule)
    return python, cuda, run.trainer.num_training_batches


def device_overrides(config: Path, device: str, data_root: Path, celeb_dir: Path) -> list[str]:
    """The tests' tiny sizes of a config (tests/conftest.py cpu_overrides); on a GPU, in the config's own precision
    (bf16-mixed for the image configs) with pinned memory, as a user's run."""
    from conftest import cpu_overrides

    overrides = cpu_overrides(config, data_root, celeb_dir)
    if device == "cpu":
        return overrides
    precision = yaml.safe_load(config.read_text())["trainer"].get("precision", "32-true")
    overrides += ["--trainer.accelerator", "gpu", "--trainer.precision", str(precision)]  # later options win
    if "--data.init_args.pin_memory" in overrides:  # the image data
        overrides += ["--data.init_args.pin_memory", "true"]
    if importlib.util.find_spec("wandb") is None:  # a GPU machine that lacks W&B (celeb_cond logs to it): CSV alone
        overrides += ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", "outputs"]
    return overrides


def main(argv: list[str] | None = None) -> str:
    """Host syncs per training step of each config at tiny size on this machine, through the real CLI."""
    import argparse
    import sys
    import tempfile

    from report import publish

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "tests"))  # the generated datasets of the tests: no download
    from helpers.fakes import make_dataset, write_idx, write_parquet

    parser = argparse.ArgumentParser(description="host syncs per training step, per config")
    parser.add_argument("--configs", nargs="+", default=["moons", "mnist_cond", "celeb_cond"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
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
            python, cuda, epoch = count_syncs(
                config,
                device_overrides(config, args.device, root, celeb),
                args.steps,
                args.log_every_n_steps,
                Path(tmp) / "outputs",
            )
            columns = []
            for counter in (python, cuda):  # the most syncs of a step: other / logging / epoch's last (not logging)
                steps = {"other": [], "logging": [], "last": []}
                for i, count in enumerate(counter.training_counts(args.steps)):
                    logging, last = (i + 1) % args.log_every_n_steps == 0, (i + 1) % epoch == 0
                    steps["logging" if logging else "last" if last else "other"].append(count)
                columns.append(" / ".join(str(max(counts)) if counts else "-" for counts in steps.values()))
            if args.device == "cpu":
                columns[1] = "(a GPU only)"
            sites = ", ".join(f"{n} x {site}" for site, n in python.sites.most_common(3))
            rows.append(
                f"| {name} | {args.device} | {args.steps} | {args.log_every_n_steps} | {epoch} "
                f"| {columns[0]} | {columns[1]} | {sites} |"
            )
    table = "\n".join(
        [
            "| config | device | steps | log every | batches an epoch "
            "| syncs of a step (max): other / logging / epoch's last, by the calls "
            "| the same, as CUDA counts them | where |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    details = (
        "each config at tiny size on generated data (tests/helpers/fakes.py), validation off, fp32 on a CPU and the "
        "config's precision on a GPU; a sync is a call that makes the host wait for a GPU: counted by wrapping "
        "item, bool, tolist, cpu, numpy and the collectives, and on a GPU also by CUDA itself "
        "(torch.cuda.set_sync_debug_mode); the epoch's last batch reads the losses (the non-finite check before "
        "an end-of-epoch checkpoint)"
    )
    return publish("Host syncs per training step (benchmarks/syncs.py)", argv, details, table, args.notes)


if __name__ == "__main__":
    print(main())
