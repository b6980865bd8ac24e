"""benchmarks/flops.py: the FLOP counter against hand counts and DiT's published figure, the table of peaks, and the
throughput benchmark's FLOPs and MFU columns in its CPU small mode."""

import pytest
import torch
import torch.nn.functional as F
from flops import count_flops, mfu, peak_tflops, training_flops_per_image
from test_benchmarks import load

from lightning_diffusion.denoisers import DiTDenoiser
from lightning_diffusion.formulations import FlowMatching


def test_a_linear_layer_counts_a_multiply_add_as_two_flops_and_its_backward_twice():
    layer, x = torch.nn.Linear(16, 8), torch.randn(4, 16, requires_grad=True)
    forward = 2 * 16 * 8 * 4  # in x out multiply-adds per row, 4 rows
    assert count_flops(layer, x) == forward
    # backward: the input's gradient and the weight's gradient, one product of the forward's size each
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * forward


def test_attention_is_counted_on_the_cpu_too():
    q, k, v = (torch.randn(2, 3, 10, 8, requires_grad=True) for _ in range(3))
    products = 2 * 3 * 10 * 10 * 8  # (batch x heads) (10 x 8) @ (8 x 10) multiply-adds, and as many for P @ V
    assert count_flops(F.scaled_dot_product_attention, q, k, v) == 2 * 2 * products
    # the backward recomputes the scores and forms 4 more products of the same size
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == 2 * 7 * products


def test_dit_s2_matches_the_gflops_of_dit_table_4():
    """DiT-S/2 on the 32x32x4 latents of 256x256 images: 6.06 Gflops in Table 4 of Peebles & Xie 2023, which counts
    a multiply-add ONCE; torch's FlopCounterMode counts it twice, so torch's count is twice the table's (12.1)."""
    torch.manual_seed(0)
    net = DiTDenoiser((4, 32, 32), num_classes=1000, depth=12, hidden_size=384, num_heads=6, patch_size=2)
    x, t, y = torch.randn(1, 4, 32, 32), torch.tensor([500]), torch.tensor([7])
    with torch.no_grad():
        forward = count_flops(net, x, t, y)
    assert forward / 2 / 1e9 == pytest.approx(6.06, rel=0.05)
    # training: a backward of about twice the forward (attention's 2.5 times)
    train = training_flops_per_image(FlowMatching(), net, x, y)
    assert train / forward == pytest.approx(3.0, rel=0.02) and all(p.grad is None for p in net.parameters())


def test_the_peaks_are_matched_on_the_device_name_and_unknown_devices_get_none():
    assert peak_tflops("NVIDIA H200", "bf16-mixed") == 989.5
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989.5
    assert peak_tflops("NVIDIA H100 PCIe", "bf16-mixed") == 756.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "32-true", "high") == 156.0  # TF32
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "32-true", "highest") == 19.5  # plain fp32
    assert peak_tflops("NVIDIA L40S", "bf16-mixed") == 362.1 and peak_tflops("NVIDIA L4", "bf16-mixed") == 121.0
    assert peak_tflops("NVIDIA GeForce RTX 4090", "bf16-mixed") == 165.2
    for name, precision in [("Tesla T4", "bf16-mixed"), ("cpu", "32-true"), ("NVIDIA H200", "16-mixed")]:
        assert peak_tflops(name, precision) is None
    assert mfu(100e9, 1000.0, None) is None
    assert mfu(100e9, 1000.0, 989.5, devices=2) == pytest.approx(100 / (2 * 989.5))


def test_throughput_small_mode_prints_flops_and_no_mfu_on_the_cpu():
    report = load("throughput").main(
        ["--device", "cpu", "--steps", "1", "--warmup", "1", "--batch_size", "2", "--configs", "mnist_cond_dit"]
        + ["--variants", "fp32", "+ channels_last", "--notes", ""]
    )
    rows = [line for line in report.splitlines() if line.startswith("| mnist_cond_dit |")]
    assert len(rows) == 1  # the DiT has no channels_last: that variant would be the plain bf16 run
    config, processes, variant, gflops, images, tflops, utilisation, _ = (c.strip() for c in rows[0][1:-1].split("|"))
    assert (processes, variant, utilisation) == ("1", "fp32", "-")  # no peak for a CPU: no MFU rather than a guess
    assert float(gflops) > 0 and float(tflops) == pytest.approx(float(gflops) * float(images) / 1e3, abs=0.01)
