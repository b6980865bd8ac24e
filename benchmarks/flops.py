"""Training FLOPs counted by torch.utils.flop_counter, and the dense peaks of known GPUs that MFU divides by.

FlopCounterMode counts the matrix products (linear layers, convolutions, attention) and counts a multiply-add as
2 FLOPs; elementwise ops (norms, activations) are not counted, as in the MFU of PaLM (Chowdhery et al. 2022, app. B).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch counts the CUDA kernels of F.scaled_dot_product_attention but not the CPU one: its formulas for that one too
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}

# Dense (no 2:4 sparsity) peaks in TFLOP/s from the vendors' data sheets: (bf16, tf32, fp32) on the tensor cores
# (fp32: the plain CUDA cores). Matched in order on torch.cuda.get_device_name(), the specific names first.
PEAK_TFLOPS: list[tuple[str, tuple[float, float, float]]] = [
    (r"H200 NVL", (835.5, 417.5, 60.0)),
    (r"H200", (989.5, 494.7, 67.0)),  # SXM
    (r"H100 NVL", (835.5, 417.5, 60.0)),
    (r"H100 PCIe", (756.5, 378.0, 51.2)),
    (r"H100", (989.5, 494.7, 67.0)),  # SXM ("H100 80GB HBM3")
    (r"A100", (312.0, 156.0, 19.5)),  # SXM and PCIe
    (r"L40S", (362.1, 183.2, 91.6)),
    (r"\bL4\b", (121.0, 60.0, 30.3)),
    (r"RTX 4090", (165.2, 82.6, 82.6)),  # bf16 with fp32 accumulation (GeForce: half the fp16-accumulate rate)
    (r"RTX A6000", (154.8, 77.4, 38.7)),
]


def count_flops(fn, *args, **kwargs) -> int:
    """The FLOPs of ``fn(*args, **kwargs)`` (and of any backward it runs) as FlopCounterMode counts them."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def training_flops_per_image(formulation: nn.Module, denoiser: nn.Module, x0: Tensor, labels: Tensor | None) -> float:
    """FLOPs of one training step (the formulation's loss, forward and backward) per image of the batch ``x0``;
    the gradients it leaves are dropped."""

    def step() -> None:
        formulation.loss(denoiser, x0, labels).backward()

    flops = count_flops(step)
    for p in denoiser.parameters():
        p.grad = None
    return flops / x0.shape[0]


def peak_tflops(device_name: str, precision: str, matmul_precision: str = "highest") -> float | None:
    """The dense peak (TFLOP/s) of a known device for a Lightning ``precision`` ("bf16-mixed", "32-true": TF32
    unless torch's float32 matmul precision is "highest"); None for an unknown device or precision."""
    column = {"bf16-mixed": 0, "bf16-true": 0}.get(precision)
    if precision in ("32-true", "32"):
        column = 2 if matmul_precision == "highest" else 1
    for pattern, peaks in PEAK_TFLOPS:
        if column is not None and re.search(pattern, device_name):
            return peaks[column]
    return None


def mfu(flops_per_image: float, images_per_second: float, peak: float | None, devices: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak of all ``devices`` (None without a known peak)."""
    if peak is None:
        return None
    return flops_per_image * images_per_second / (peak * 1e12 * devices)
