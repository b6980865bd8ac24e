"""Framework overhead: DiffusionModule under the Lightning Trainer vs the plain PyTorch loop of the seeds' notebooks.

    python benchmarks/overhead.py                 # a 1-parameter model, the moons MLP and the MNIST UNet
    #                                               (on CPU, and CUDA if present)
    python benchmarks/overhead.py --steps 5 --notes ''   # the small mode the tests run

Both sides train the same denoiser (same initial weights) with the same scheduler, optimizer and batches, held in
memory and served by the same DataLoader, so data loading costs both alike. The plain loop is the notebooks' one:
it iterates the DataLoader and records each step's loss (`loss.item()`, what their progress bars and loss plots
show). Lightning runs without logger, checkpoints, progress bar or validation, so what remains is the framework's
per-step work (hooks, the optimizer closure, `self.log`, the non-finite-loss check). The two loops alternate
`--repeats` times, so that a drift of a shared machine hits both alike, and the table gives the median of each with
the load average before and after; "Lightning's extra us/step" is the difference of the two step times (on the
1-parameter model: the framework's fixed cost per step, which a step of any model pays). A third loop is the
framework as the configs ship it: the same, with AdamW's `fused: true` (the same update in one kernel), against the
notebooks' loop as they wrote it. Prints a table and appends it, with the command and the machine, to
notes/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import time

import lightning as L
import torch
from diffusers import DDPMScheduler
from report import publish
from torch.utils.data import DataLoader

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import MLPDenoiser, UNetDenoiser
from lightning_diffusion.formulations import ddpm as diffusion


class Scale(torch.nn.Module):
    """A one-parameter denoiser: a step costs almost nothing, so the difference of the loops is the framework's fixed
    cost per step, in microseconds, whatever the model."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_labels=None) -> torch.Tensor:
        return self.weight * x_t


def cases(device: str) -> dict[str, tuple[torch.nn.Module, tuple[int, ...], int, int]]:
    """name -> (denoiser, sample shape, batch size, steps): a one-parameter model (the fixed cost per step), the MLP
    of configs/moons.yaml and the UNet of configs/mnist.yaml (a smaller batch and fewer steps on CPU, where one UNet
    step takes about a second)."""
    cuda = device == "cuda"
    unet = UNetDenoiser(
        sample_shape=(1, 32, 32), block_out_channels=[64, 128, 256], attention_levels=[2], channels_last=cuda
    )
    return {
        "Scale (1 parameter)": (Scale(), (2,), 8, 2000),
        "MLP 2D (moons.yaml)": (MLPDenoiser(hidden_dim=128, num_blocks=3), (2,), 256, 300),
        "UNet 32x32 (mnist.yaml)": (unet, (1, 32, 32), 128 if cuda else 16, 200 if cuda else 20),
    }


def loader(batches, device) -> DataLoader:
    """The batches as both loops get them."""
    return DataLoader(batches, batch_size=None, pin_memory=device == "cuda")


def plain_loop(denoiser, scheduler, batches, device) -> float:
    """Steps per second of the hand-written loop."""
    denoiser = denoiser.to(device).train()
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    losses = []
    for i, x0 in enumerate(loader(batches, device)):
        if i == 1:  # after the warm-up step
            _sync(device)
            start = time.perf_counter()
        loss = diffusion.diffusion_loss(denoiser, x0.to(device, non_blocking=True), alphas_cumprod)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    _sync(device)
    return (len(batches) - 1) / (time.perf_counter() - start)


class _Timer(L.Callback):
    """Times the steps after the first (warm-up) one."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            _sync(pl_module.device.type)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        _sync(pl_module.device.type)
        self.steps_per_second = (trainer.global_step - 1) / (time.perf_counter() - self.start)


def lightning_loop(denoiser, scheduler, batches, device, fused: bool = False) -> float:
    """Steps per second of DiffusionModule under the Trainer (with `fused`: AdamW as configs/ ship it)."""
    model = DiffusionModule(
        denoiser,
        scheduler,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4, fused=fused),
        sample_shape=tuple(batches[0].shape[1:]),
    )
    timer = _Timer()
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, loader(batches, device))
    return timer.steps_per_second


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps per measurement (default: per case)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating measurements; the median of each is kept")
    parser.add_argument("--devices", nargs="*", default=None, help="cpu and/or cuda (default: all available)")
    parser.add_argument("--cases", nargs="*", default=None, help="Scale, MLP and/or UNet (default: all)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    rows = []  # | case | device | batch | steps | plain | Lightning | overhead |
    load_before = os.getloadavg()[0]
    for device in devices:
        for name, (denoiser, shape, batch_size, steps) in cases(device).items():
            if args.cases and name.split()[0] not in args.cases:
                continue
            torch.manual_seed(0)
            batches = [torch.randn(batch_size, *shape) for _ in range((args.steps or steps) + 1)]
            loops = [(plain_loop, []), (lightning_loop, []), (functools.partial(lightning_loop, fused=True), [])]
            for r in range(args.repeats):  # alternate (ABCCBA), so that drifts of the machine hit every loop alike
                for loop, times in loops[:: 1 if r % 2 == 0 else -1]:
                    times.append(loop(copy.deepcopy(denoiser), DDPMScheduler(), batches, device))
            plain, framework, shipped = (times for _, times in loops)
            p, f, s = (statistics.median(times) for times in (plain, framework, shipped))
            n = len(batches) - 1
            spread = " / ".join(f"{min(times):.2f}-{max(times):.2f}" for times in (plain, framework, shipped))
            extra_us = 1e6 / f - 1e6 / p  # the framework's time per step beyond the plain loop's
            rows.append(
                f"| {name} | {device} | {batch_size} | {n} | {p:.2f} | {f:.2f} | {100 * (p - f) / p:+.1f}% "
                f"| {extra_us:+.0f} | {s:.2f} | {s / p:.2f}x | {spread} |"
            )
    table = "\n".join(
        [
            "| case | device | batch | steps | plain loop steps/s | Lightning steps/s (same optimizer) | overhead "
            "| Lightning's extra us/step | Lightning steps/s, fused AdamW (as configs/ ship it) | vs plain loop "
            "| range plain / Lightning / fused |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    details = (
        f"lightning {L.__version__}, median of {args.repeats} alternating measurements; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after."
    )
    return publish("Framework overhead", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
