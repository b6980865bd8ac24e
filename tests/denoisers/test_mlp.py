import pytest
import torch

from lightning_diffusion.denoisers import MLPDenoiser


@pytest.mark.parametrize("num_classes", [None, 3])
def test_mlp_shape_contract(num_classes):
    net = MLPDenoiser(sample_shape=(2,), num_classes=num_classes, hidden_dim=32, num_blocks=2)
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    labels = None if num_classes is None else torch.tensor([0, 1, 2, 3, 0])  # 3 is the null label
    out = net(x, t, labels)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert net(x, t.float() + 0.5).shape == x.shape  # fractional timesteps (Euler-type samplers)


def test_mlp_depends_on_time_and_label():
    torch.manual_seed(0)
    net = MLPDenoiser(num_classes=2, hidden_dim=32)
    x = torch.randn(4, 2)
    t = torch.full((4,), 10)
    assert not torch.allclose(net(x, t, torch.zeros(4, dtype=torch.long)), net(x, t, torch.ones(4, dtype=torch.long)))
    assert not torch.allclose(net(x, t), net(x, t + 500))
    # no label on a conditional model means the null label
    assert torch.equal(net(x, t), net(x, t, torch.full((4,), 2)))
