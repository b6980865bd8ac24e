"""Streaming shards at scale: the one-time `prepare` time and a training epoch's peak resident memory for sets of
10,000 and 100,000 generated 64x64 RGB images (123 MB and 1.2 GB of pixels), the epoch in a process of its own
(its /proc VmHWM: the peak of that process alone).

    python benchmarks/streaming_scale.py [--sizes 10000 100000] [--workers 2]

Memory is what litdata holds (a few chunks), not the set: it should not grow with the set's size.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import publish

from lightning_diffusion.data import ImageDataModule
from lightning_diffusion.data.images import CachedImages
from lightning_diffusion.tools.prepare import prepare

EPOCH = """
import sys, time
from lightning_diffusion.data import StreamingImageDataModule

data = StreamingImageDataModule(sys.argv[1], batch_size=64, random_flip=False, cache_dir=None)
start = time.perf_counter()
n = sum(len(x) for x, *_ in data.train_dataloader())
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(n, seconds, int(status["VmHWM"].split()[0]))
"""


class Generated(ImageDataModule):
    """n random uint8 64x64 RGB images, unlabelled, all for training."""

    def __init__(self, n: int, size: int = 64) -> None:
        super().__init__(64, 0, False, False, 0, None)
        self.size = size
        images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        labels = torch.zeros(n, dtype=torch.long)
        self.splits = {"train": CachedImages(images, labels, torch.arange(n), False)}
        self.splits["val"] = CachedImages(images, labels, torch.arange(0), False)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    @property
    def data_mean(self) -> list[float]:
        return [0.5] * 3

    @property
    def data_std(self) -> list[float]:
        return [0.5] * 3


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2, help="prepare's processes")
    parser.add_argument("--chunk_bytes", default="64MB", help="the size of a shard's chunk (prepare's default)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    rows = [
        "| images | prepare (s) | prepare images/s | epoch images/s | epoch peak RSS (MB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            data = Generated(n)
            start = time.perf_counter()
            shards = prepare(data, Path(folder) / str(n), workers=args.workers, chunk_bytes=args.chunk_bytes)
            seconds = time.perf_counter() - start
            del data
            result = subprocess.run(
                [sys.executable, "-c", EPOCH, str(shards)], capture_output=True, text=True, check=True
            )
            count, epoch_seconds, peak = result.stdout.split()
            rows.append(
                f"| {n:,} | {seconds:.1f} | {n / seconds:,.0f} | {int(count) / float(epoch_seconds):,.0f} | "
                f"{int(peak) / 1024:,.0f} |"
            )
    details = (
        f"generated 64x64 RGB images, prepare with {args.workers} processes in {args.chunk_bytes} chunks, epoch "
        "batch 64, 0 workers."
    )
    return publish("Streaming shards at scale", argv, details, "\n".join(rows), args.notes)


if __name__ == "__main__":
    main()
