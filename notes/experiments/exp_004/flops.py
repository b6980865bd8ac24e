"""Training FLOPs per image of exp_004's two arms, built by the real CLI from their config stacks and counted by
benchmarks/flops.py (FlopCounterMode, a multiply-add is 2 FLOPs), with the parameter count and the CPU step time:

    python notes/experiments/exp_004/flops.py                       # the two arms as the note runs them
    python notes/experiments/exp_004/flops.py --dit "[8, 192, 6]"   # another DiT: depth, width, heads
"""

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
from flops import training_flops_per_image  # noqa: E402

from lightning_diffusion.cli import DiffusionCLI  # noqa: E402

C = REPO / "configs"
ARMS = {
    "unet": [C / "mnist_cond_flow.yaml", C / "benchmarks/mnist_5k_cpu.yaml", C / "benchmarks/mnist_cond_cpu.yaml"],
    "dit": [C / "mnist_cond_dit.yaml", C / "benchmarks/mnist_5k_cpu.yaml"],
}
ARMS = {name: [*stack, C / f"experiments/exp_004/{name}.yaml"] for name, stack in ARMS.items()}


def measure(stack: list[Path], extra: list[str], batch: int = 64, steps: int = 3) -> tuple[float, int, float]:
    args = [a for f in stack for a in ("--config", str(f))] + ["--trainer.logger", "false", *extra]
    model = DiffusionCLI(run=False, args=args).model
    data_shape = (1, 28, 28)
    x0, labels = torch.randn(batch, *data_shape), torch.randint(0, 10, (batch,))
    flops = training_flops_per_image(model.formulation, model.denoiser, x0[:2], labels[:2])
    params = sum(p.numel() for p in model.denoiser.parameters())
    optimizer = torch.optim.AdamW(model.denoiser.parameters(), lr=1e-4)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        optimizer.zero_grad()
        model.formulation.loss(model.denoiser, x0, labels).backward()
        optimizer.step()
    return flops, params, (time.perf_counter() - start) / steps


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dit", help="[depth, hidden_size, num_heads] instead of exp_004/dit.yaml's")
    cli = parser.parse_args()
    print("| arm | parameters | train GFLOPs/image | CPU seconds/step (batch 64) |")
    print("| --- | --- | --- | --- |")
    for name, stack in ARMS.items():
        extra = []
        if name == "dit" and cli.dit:
            depth, width, heads = (int(v) for v in cli.dit.strip("[]").split(","))
            extra = [
                f"--model.denoiser.init_args.{k}={v}"
                for k, v in zip(("depth", "hidden_size", "num_heads"), (depth, width, heads), strict=True)
            ]
        flops, params, seconds = measure(stack, extra)
        print(f"| {name} | {params / 1e6:.2f}M | {flops / 1e9:.3f} | {seconds:.2f} |")
