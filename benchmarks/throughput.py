"""Training throughput of the image configs: images/s and peak GPU memory for fp32, bf16-mixed, + channels_last,
+ torch.compile, on one device or under DDP.

    python benchmarks/throughput.py                                   # on a CUDA GPU: mnist_cond and celeb_cond
    python benchmarks/throughput.py --devices 1 2                     # one GPU, then 2-process DDP (2 GPUs)
    python benchmarks/throughput.py --device cpu --steps 2 --notes ''   # the small mode the tests run

Under DDP (`--devices N`, N > 1) each measurement runs in its own `torchrun --standalone --nproc_per_node N`, as a
multi-GPU run is launched, and every rank trains on the same in-memory batches (no distributed sampler): images/s
counts all ranks' images, the peak memory is rank 0's.

Each variant trains the config's own DiffusionModule (built by the real CLI from the YAML, so the UNet is the
configured one) on in-memory random batches of the data's shape and labels, so that the data pipeline is not
measured here (benchmarks/dataloader.py measures it). Prints a table and appends it to notes/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from report import publish
from torch.utils.data import DataLoader

from lightning_diffusion.cli import DiffusionCLI

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name -> (precision, channels_last, compile)
    "fp32": ("32-true", False, False),
    "bf16-mixed": ("bf16-mixed", False, False),
    "+ channels_last": ("bf16-mixed", True, False),
    "+ torch.compile": ("bf16-mixed", True, True),
}


class _Timer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module.device)
        self.seconds = time.perf_counter() - self.start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    config: str, variant: str, device: str, steps: int, warmup: int, batch_size: int | None, devices: int = 1
) -> tuple[float, float]:
    """images/s (of all `devices`) and peak memory (GiB, CUDA only; rank 0's) of `steps` training steps after `warmup`
    ones; with `devices` > 1, inside the processes of torchrun (`launch`)."""
    precision, channels_last, compile = VARIANTS[variant]
    cli = DiffusionCLI(
        run=False,
        args=[
            "--config",
            str(REPO / "configs" / f"{config}.yaml"),
            "--trainer.logger",
            "false",
            f"--model.denoiser.init_args.channels_last={channels_last}",
            f"--model.compile={compile}",
            "--data.init_args.download=false" if config.startswith("mnist") else "--data.init_args.root=data",
        ],
    )
    model, data = cli.model, cli.datamodule
    batch = batch_size or data.batch_size
    num_classes = data.num_classes
    batches = [
        (torch.randn(batch, *data.sample_shape), torch.randint(0, num_classes, (batch,)))
        if num_classes
        else (torch.randn(batch, *data.sample_shape),)
        for _ in range(warmup + steps)
    ]
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator=device,
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision=precision,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=[timer],
    )
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # each rank on its own GPU, also for the stats
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, DataLoader(batches, batch_size=None, pin_memory=device == "cuda"))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return devices * steps * batch / timer.seconds, peak


def launch(args: argparse.Namespace, config: str, variant: str, devices: int) -> tuple[float, float]:
    """`measure` under `torchrun --standalone --nproc_per_node devices`; rank 0 hands the numbers back in a file."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={devices}",
            __file__,
            "--configs",
            config,
            "--variants",
            variant,
            "--device",
            args.device,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--devices",
            str(devices),
            "--notes",
            "",
            "--result_file",
            result,
            *(["--batch_size", str(args.batch_size)] if args.batch_size else []),
        ]
        subprocess.run(
            command, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        )
        with open(result) as f:
            return tuple(json.load(f))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=["mnist_cond", "celeb_cond"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10, help="steps before timing (compilation happens here)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the config's")
    parser.add_argument("--devices", type=int, nargs="*", default=[1], help="processes: 1 and/or N > 1 (DDP)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    parser.add_argument("--result_file", default=None, help=argparse.SUPPRESS)  # launch's rank 0 writes here
    args = parser.parse_args(argv)
    if args.result_file:  # a rank of `launch`
        numbers = measure(
            args.configs[0], args.variants[0], args.device, args.steps, args.warmup, args.batch_size, args.devices[0]
        )
        if int(os.environ.get("RANK", 0)) == 0:
            with open(args.result_file, "w") as f:
                json.dump(numbers, f)
        return ""
    rows = []
    for config in args.configs:
        for devices in args.devices:
            for variant in args.variants:
                if devices == 1:
                    images_per_second, peak = measure(
                        config, variant, args.device, args.steps, args.warmup, args.batch_size
                    )
                else:
                    images_per_second, peak = launch(args, config, variant, devices)
                rows.append(f"| {config} | {devices} | {variant} | {images_per_second:.1f} | {peak:.2f} |")
    table = "\n".join(
        ["| config | processes | variant | images/s | peak GiB (rank 0) |", "| --- | --- | --- | --- | --- |", *rows]
    )
    size = args.batch_size or "the config's batch size"
    details = (
        f"device {args.device}, {args.steps} timed steps after {args.warmup}, random in-memory batches of "
        f"{size} per process."
    )
    return publish("Training throughput", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
