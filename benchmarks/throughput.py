"""Training throughput of the image configs: training FLOPs per image, images/s, achieved TFLOP/s, MFU and peak
GPU memory for fp32, bf16-mixed, + channels_last, + torch.compile, on one device or under DDP.

    python benchmarks/throughput.py                                   # on a CUDA GPU: the UNet and DiT configs
    python benchmarks/throughput.py --devices 1 2                     # one GPU, then 2-process DDP (2 GPUs)
    python benchmarks/throughput.py --device cpu --steps 2 --notes ''   # the small mode the tests run

Under DDP (`--devices N`, N > 1) each measurement runs in its own `torchrun --standalone --nproc_per_node N`, as a
multi-GPU run is launched, and every rank trains on the same in-memory batches (no distributed sampler): images/s
counts all ranks' images, the peak memory is rank 0's.

Each variant trains the config's own DiffusionModule (built by the real CLI from the YAML, so the UNet is the
configured one) on in-memory random batches of the data's shape and labels, so that the data pipeline is not
measured here (benchmarks/dataloader.py measures it). Prints a table and appends it to notes/benchmarks.md.

The FLOPs of a training step (the formulation's loss, forward and backward, per image) are counted by
torch.utils.flop_counter (benchmarks/flops.py: a multiply-add is 2 FLOPs) on the eager fp32 model, the same for
every variant. MFU is the achieved FLOP/s over the dense peak of the device for the variant's precision (bf16; TF32
or fp32 as torch's float32 matmul precision says) times the processes; on a device missing from flops.PEAK_TFLOPS it
prints "-". The "+ channels_last" variant runs only for denoisers with that option (the UNet).
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
import yaml
from flops import mfu, peak_tflops, training_flops_per_image
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


def has_channels_last(config: str) -> bool:
    """Whether the config's denoiser has a ``channels_last`` option (the UNet; not the DiT)."""
    denoiser = yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())["model"]["denoiser"]
    return "channels_last" in denoiser.get("init_args", {})


def measure(
    config: str, variant: str, device: str, steps: int, warmup: int, batch_size: int | None, devices: int = 1
) -> tuple[float, float, float, str]:
    """images/s (of all `devices`), peak memory (GiB, CUDA only; rank 0's) of `steps` training steps after `warmup`
    ones, the training FLOPs per image and torch's float32 matmul precision of the run; with `devices` > 1, inside
    the processes of torchrun (`launch`)."""
    precision, channels_last, compile = VARIANTS[variant]
    layout = [f"--model.denoiser.init_args.channels_last={channels_last}"] if has_channels_last(config) else []
    cli = DiffusionCLI(
        run=False,
        args=[
            "--config",
            str(REPO / "configs" / f"{config}.yaml"),
            "--trainer.logger",
            "false",
            *layout,
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
    # per image, so two images suffice (counted on the CPU, before the Trainer moves the model)
    x0, labels = batches[0][0][:2], batches[0][1][:2] if num_classes else None
    flops = training_flops_per_image(model.formulation, model.denoiser, x0, labels)
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
    return devices * steps * batch / timer.seconds, peak, flops, torch.get_float32_matmul_precision()


def launch(args: argparse.Namespace, config: str, variant: str, devices: int) -> tuple[float, float, float, str]:
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
    parser.add_argument("--configs", nargs="*", default=["mnist_cond", "celeb_cond", "celeb_cond_dit"])
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
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    rows = []
    for config in args.configs:
        for devices in args.devices:
            for variant in args.variants:
                if VARIANTS[variant][1] and not has_channels_last(config):
                    continue  # no such option: the same run as bf16-mixed
                if devices == 1:
                    numbers = measure(config, variant, args.device, args.steps, args.warmup, args.batch_size)
                else:
                    numbers = launch(args, config, variant, devices)
                images_per_second, peak, flops, matmul_precision = numbers
                peak_flops = peak_tflops(name, VARIANTS[variant][0], matmul_precision)
                utilisation = mfu(flops, images_per_second, peak_flops, devices)
                rows.append(
                    f"| {config} | {devices} | {variant} | {flops / 1e9:.2f} | {images_per_second:.1f} | "
                    f"{flops * images_per_second / 1e12:.2f} | "
                    f"{'-' if utilisation is None else f'{100 * utilisation:.1f}%'} | {peak:.2f} |"
                )
    header = "| config | processes | variant | train GFLOPs/image | images/s | TFLOP/s | MFU | peak GiB (rank 0) |"
    table = "\n".join([header, "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows])
    size = args.batch_size or "the config's batch size"
    details = (
        f"device {name}, {args.steps} timed steps after {args.warmup}, random in-memory batches of {size} per "
        "process; FLOPs counted by torch.utils.flop_counter (a multiply-add is 2), MFU against the dense peak of "
        "benchmarks/flops.py for the variant's precision, over all processes."
    )
    return publish("Training throughput", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
