import re

import pytest
import torch
from diffusers import UNet2DModel

from lightning_diffusion.denoisers.unet import UNetDenoiser

TINY = dict(block_out_channels=[16, 32], norm_num_groups=8, layers_per_block=1)


@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize(
    "sample_shape, block_out_channels", [((1, 28, 28), [16, 32]), ((3, 32, 32), [16, 16, 32]), ((3, 16, 8), [16, 32])]
)
def test_unet_shape_contract(num_classes, sample_shape, block_out_channels):
    torch.manual_seed(0)
    net = UNetDenoiser(sample_shape, num_classes, **{**TINY, "block_out_channels": block_out_channels})
    assert net.sample_shape == sample_shape and net.num_classes == num_classes
    x, t = torch.randn(4, *sample_shape), torch.randint(0, 1000, (4,))
    labels = None if num_classes is None else torch.tensor([0, 1, 2, 3])  # 3 is the null label
    out = net(x, t, labels)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    assert net(x, t.float() + 0.5, labels).shape == x.shape  # fractional timesteps (Euler-type samplers)


def test_unet_attention_levels():
    net = UNetDenoiser((1, 8, 8), attention_levels=[1], **TINY)
    assert net.unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert net.unet.config.up_block_types == ("AttnUpBlock2D", "UpBlock2D")
    assert net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2])).shape == (2, 1, 8, 8)


def test_unet_depends_on_time_and_label():
    torch.manual_seed(0)
    net = UNetDenoiser((1, 8, 8), num_classes=2, **TINY)
    with torch.no_grad():  # zero-initialised layers would hide the conditioning: randomise everything
        for p in net.parameters():
            p.normal_(0, 0.1)
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 10)
    zeros, ones = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    assert not torch.allclose(net(x, t, zeros), net(x, t, ones))
    assert not torch.allclose(net(x, t, zeros), net(x, t + 500, zeros))
    # no label on a conditional model means the null label
    assert torch.equal(net(x, t), net(x, t, torch.full((3,), 2)))


def test_unet_channels_last_matches_contiguous():
    torch.manual_seed(0)
    fast = UNetDenoiser((3, 8, 8), num_classes=2, channels_last=True, **TINY)
    plain = UNetDenoiser((3, 8, 8), num_classes=2, channels_last=False, **TINY)
    plain.load_state_dict(fast.state_dict())
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([5, 900]), torch.tensor([0, 1])
    torch.testing.assert_close(fast(x, t, y), plain(x, t, y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, numbers",
    [
        (dict(sample_shape=(1, 28, 28), block_out_channels=[8, 8, 8, 8]), ["28x28", "8"]),
        (dict(sample_shape=(1, 28, 28), down_block_types=["DownBlock2D"] * 3), ["3", "2"]),
        (dict(sample_shape=(1, 8, 8), up_block_types=["UpBlock2D"]), ["1", "2"]),
        (dict(sample_shape=(2,)), ["(2,)", "1"]),
        (dict(sample_shape=(1, 8, 8), block_out_channels=[16, 20], norm_num_groups=8), ["8", "20"]),
        (dict(sample_shape=(1, 8, 8), attention_levels=[2]), ["[2]", "2"]),
    ],
)
def test_unet_validation(kwargs, numbers):
    with pytest.raises(ValueError) as err:
        UNetDenoiser(**{**TINY, **kwargs})
    message = str(err.value)
    assert all(n in message for n in numbers), message
    assert message.endswith(".") and not re.search(r"\.\s+[A-Z]", message)  # one sentence


def test_unet_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    net = UNetDenoiser((1, 8, 8), num_classes=2, channels_last=True, **TINY).eval()
    net.unet.save_pretrained(tmp_path)
    loaded = UNet2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.num_class_embeds == 3 and list(loaded.config.block_out_channels) == [16, 32]
    for name, tensor in net.unet.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    # same weights in the same memory format: bitwise the same outputs
    loaded.to(memory_format=torch.channels_last)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    with torch.no_grad():
        expected = loaded(x.contiguous(memory_format=torch.channels_last), t, class_labels=y).sample
        assert torch.equal(net(x, t, y), expected)
