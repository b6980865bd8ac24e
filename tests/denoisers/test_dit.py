import re

import pytest
import torch

from lightning_diffusion.denoisers import DiTDenoiser

TINY = dict(depth=2, hidden_size=32, num_heads=4, patch_size=2)


def randomised(net: DiTDenoiser) -> DiTDenoiser:
    """adaLN-Zero hides every input at initialisation: random weights everywhere, so that outputs differ."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net


@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("sample_shape, patch_size", [((1, 32, 32), 2), ((3, 16, 8), 4), ((4, 8, 8), 1)])
def test_dit_shape_contract(num_classes, sample_shape, patch_size):
    net = randomised(DiTDenoiser(sample_shape, num_classes, **{**TINY, "patch_size": patch_size}))
    assert net.sample_shape == sample_shape and net.num_classes == num_classes
    x, t = torch.randn(4, *sample_shape), torch.randint(0, 1000, (4,))
    labels = None if num_classes is None else torch.tensor([0, 1, 2, 3])  # 3 is the null label
    out = net(x, t, labels)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    # fractional times (flow matching's 1000 t) and EDM's c_noise = ln(sigma) / 4, one per sample or one for all
    assert torch.isfinite(net(x, t.float() + 0.5, labels)).all()
    assert torch.isfinite(net(x, torch.tensor([-1.5, 0.0, 0.3, 1.1]), labels)).all()
    assert torch.equal(net(x, torch.tensor(7.0), labels), net(x, torch.full((4,), 7.0), labels))
    bf16 = net.to(torch.bfloat16)(x.bfloat16(), t, labels)
    assert bf16.shape == x.shape and bf16.dtype == torch.bfloat16


def test_a_fresh_dit_outputs_exactly_zero():
    net = DiTDenoiser((3, 16, 16), num_classes=5, **TINY)
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(net(x, torch.tensor([1, 500, 999]), torch.tensor([0, 4, 5])), torch.zeros_like(x))
    assert torch.equal(DiTDenoiser((1, 8, 8), **TINY)(x[:, :1, :8, :8], torch.zeros(3)), torch.zeros(3, 1, 8, 8))


def test_the_position_embedding_is_a_fixed_buffer():
    net = DiTDenoiser((1, 8, 8), **TINY)
    assert "pos_embed" in dict(net.named_buffers()) and "pos_embed" not in dict(net.named_parameters())
    assert "pos_embed" not in net.state_dict()  # rebuilt from the options, never loaded
    assert net.pos_embed.shape == (1, 16, 32) and len(net.pos_embed[0].unique(dim=0)) == 16  # one per patch


def test_training_mode_hides_no_label_dropout():
    net = randomised(DiTDenoiser((1, 8, 8), num_classes=3, **TINY)).train()
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([3, 30, 300, 900]), torch.tensor([0, 1, 2, 0])
    first, second = net(x, t, y), net(x, t, y)
    assert first.abs().max() > 0 and torch.equal(first, second)
    assert not torch.allclose(first, net(x, t, torch.full((4,), 3)))  # the labels do reach the output


def test_the_conditioning_reaches_the_output_after_training_steps():
    """adaLN-Zero: the first step moves only the decoder (every gate and modulation multiplies a zero), so the output
    is still blind to time and label; from the second step on, the null label gives another output."""
    torch.manual_seed(0)
    net = DiTDenoiser((1, 8, 8), num_classes=3, **TINY)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, t, y = torch.randn(8, 1, 8, 8), torch.randint(0, 1000, (8,)), torch.randint(0, 3, (8,))
    null = torch.full((8,), 3)

    def step():
        optimizer.zero_grad()
        (net(x, t, y) - torch.randn_like(x)).pow(2).mean().backward()
        optimizer.step()

    step()
    with torch.no_grad():
        out = net(x, t, y)
        assert out.abs().max() > 0 and torch.equal(out, net(x, t, null)) and torch.equal(out, net(x, t + 1, y))
    step()
    with torch.no_grad():
        assert not torch.allclose(net(x, t, y), net(x, t, null)) and not torch.equal(net(x, t, y), net(x, t + 1, y))
        assert torch.equal(net(x, t), net(x, t, null))  # no label on a conditional model means the null label


def test_dit_s2_has_the_parameter_count_of_dit_table_1():
    """DiT-S/2 on the 32x32x4 latents of 256x256 ImageNet (1000 classes): 33M parameters in Table 1 of Peebles &
    Xie 2023 (theirs also predicts the variance, 2 x 4 output channels: 6,160 parameters more than ours)."""
    net = DiTDenoiser((4, 32, 32), num_classes=1000, depth=12, hidden_size=384, num_heads=6, patch_size=2)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(33e6, rel=0.02)


def test_an_unconditional_dit_refuses_labels():
    with pytest.raises(ValueError, match="unconditional"):
        DiTDenoiser((1, 8, 8), **TINY)(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(sample_shape=(1, 28, 28), patch_size=3), ["28x28", "patch_size 3"]),
        (dict(hidden_size=30, num_heads=4), ["hidden_size 30", "num_heads 4"]),
        (dict(hidden_size=18, num_heads=3), ["hidden_size 18", "4"]),
        (dict(depth=0), ["depth", "0"]),
        (dict(num_heads=-2), ["num_heads", "-2"]),
        (dict(patch_size=0), ["patch_size", "0"]),
        (dict(hidden_size=0), ["hidden_size", "0"]),
        (dict(mlp_ratio=0.0), ["mlp_ratio", "0.0"]),
        (dict(frequency_embedding_size=7), ["frequency_embedding_size 7"]),
        (dict(sample_shape=(2,)), ["(2,)", "1 dims"]),
    ],
)
def test_dit_bad_options_are_one_sentence_naming_the_option(kwargs, words):
    with pytest.raises(ValueError) as err:
        DiTDenoiser(**{"sample_shape": (1, 8, 8), **TINY, **kwargs})
    message = str(err.value)
    assert all(w in message for w in words), message
    assert message.endswith(".") and not re.search(r"\.\s+[A-Z]", message)  # one sentence
