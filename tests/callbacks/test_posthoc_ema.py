"""Post-hoc EMA (EDM2): the tracked power-function averages against their closed form, the least-squares
reconstruction against the profiles it stores and a directly tracked one, and the snapshot files (whole, rank 0)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_diffusion.callbacks import PostHocEMA
from lightning_diffusion.optim import (
    gamma_to_sigma_rel,
    posthoc_ema_coefficients,
    profile_inner_products,
    sigma_rel_to_gamma,
)
from lightning_diffusion.runs import posthoc_ema_snapshots
from lightning_diffusion.tools.posthoc_ema import reconstruct


class Weights(torch.nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size))
        self.register_buffer("counter", torch.zeros((), dtype=torch.long))


def train(callback: PostHocEMA, sequence: torch.Tensor, folder, rank: int = 0):
    """Drives the callback as a fit would: the weights are sequence[t - 1] after optimizer step t."""
    module = SimpleNamespace(denoiser=Weights(sequence.shape[1]), device=torch.device("cpu"))
    trainer = SimpleNamespace(global_step=0, global_rank=rank, loggers=[], default_root_dir=str(folder), ckpt_path=None)
    callback.setup(trainer, module, "fit")
    callback.on_train_start(trainer, module)
    for t, weights in enumerate(sequence, start=1):
        with torch.no_grad():
            module.denoiser.weight.copy_(weights)
        trainer.global_step = t
        callback.on_train_batch_end(trainer, module)
    callback.on_train_end(trainer, module)
    return callback


def closed_form(sequence: torch.Tensor, gamma: float) -> torch.Tensor:
    """The average after T steps: step s weighs (s/T)^(gamma+1) - ((s-1)/T)^(gamma+1)."""
    s = torch.arange(1, len(sequence) + 1, dtype=torch.float64) / len(sequence)
    weights = s ** (gamma + 1) - (s - 1 / len(sequence)) ** (gamma + 1)
    return (weights[:, None] * sequence.double()).sum(0)


def random_walk(steps: int, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(steps, size, generator=generator).cumsum(0) / steps**0.5 + torch.linspace(-1, 1, size)


def test_sigma_rel_and_gamma_are_inverse_and_match_edm2s_values():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2, sec. 3.1: gamma 16.97 and 6.94
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for sigma_rel in (0.01, 0.05, 0.1, 0.2):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-12)


def test_profile_inner_products_match_numerical_integration():
    a, b, t_a, t_b = 6.94, 3.0, 700.0, 1000.0
    tau = np.linspace(0, t_a, 2_000_001)
    p_a, p_b = (a + 1) * tau**a / t_a ** (a + 1), (b + 1) * tau**b / t_b ** (b + 1)
    numeric = np.trapezoid(p_a * p_b, tau)
    for args in ((t_a, a, t_b, b), (t_b, b, t_a, a)):  # symmetric
        assert profile_inner_products(*map(np.float64, args)) == pytest.approx(numeric, rel=1e-9)


def test_the_tracked_averages_are_their_closed_form(tmp_path):
    sequence = random_walk(300)
    callback = train(PostHocEMA(sigma_rels=[0.05, 0.10], snapshot_every_n_steps=100), sequence, tmp_path)
    for gamma, profile in zip(callback.gammas, callback.profiles, strict=True):
        torch.testing.assert_close(profile["weight"].double(), closed_form(sequence, gamma), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(callback.profiles[0]["weight"], callback.profiles[1]["weight"], atol=1e-3)


def test_reconstructing_a_stored_profile_returns_it(tmp_path):
    callback = train(PostHocEMA(snapshot_every_n_steps=50), random_walk(400), tmp_path)
    assert list(posthoc_ema_snapshots(tmp_path)) == [50, 100, 150, 200, 250, 300, 350, 400]
    for sigma_rel, profile in zip(callback.sigma_rels, callback.profiles, strict=True):
        weights, step, record = reconstruct(tmp_path, sigma_rel)
        assert step == 400 and record["snapshot_steps"][-2:] == [400, 400]
        torch.testing.assert_close(weights["weight"], profile["weight"], rtol=0, atol=1e-6)
        assert torch.equal(weights["counter"], torch.zeros((), dtype=torch.long))  # a buffer, copied
    # at an earlier step, the snapshot of that step
    earlier = torch.load(tmp_path / "posthoc_ema" / "snapshot-step=0000200.pt", weights_only=True)
    weights, _, _ = reconstruct(tmp_path, 0.10, step=200)
    torch.testing.assert_close(weights["weight"], earlier["profiles"][1]["weight"], rtol=0, atol=1e-6)


def test_a_length_between_the_stored_ones_is_close_to_tracking_it(tmp_path):
    sequence = random_walk(400)
    train(PostHocEMA(sigma_rels=[0.05, 0.10], snapshot_every_n_steps=25), sequence, tmp_path / "stored")
    direct = closed_form(sequence, sigma_rel_to_gamma(0.075)).float()
    weights, _, record = reconstruct(tmp_path / "stored", 0.075)
    error = (weights["weight"] - direct).norm()
    spread = (closed_form(sequence, sigma_rel_to_gamma(0.05)) - closed_form(sequence, sigma_rel_to_gamma(0.10))).norm()
    assert error < 0.01 * spread, (error, spread)  # measured 0.07% of it
    assert sum(record["coefficients"]) == pytest.approx(1.0)


def test_coefficients_of_a_stored_profile_are_that_profile():
    steps, gammas = [100, 100, 200, 200], [sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10)] * 2
    x = posthoc_ema_coefficients(steps, gammas, 200, gammas[1])
    np.testing.assert_allclose(x, [0, 0, 0, 1], atol=1e-9)


def test_only_rank_zero_writes_snapshots_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    train(PostHocEMA(snapshot_every_n_steps=5), random_walk(10), tmp_path / "rank1", rank=1)
    assert not (tmp_path / "rank1").exists()

    def broken_save(obj, file):
        file.write(b"half a snapshot")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(PostHocEMA(snapshot_every_n_steps=5), random_walk(10), tmp_path / "rank0")
    assert not [p for p in (tmp_path / "rank0").rglob("*") if p.is_file()]


@pytest.mark.parametrize("sigma_rels", [[0.05, 0.05], [0.0, 0.1], [0.3]])
def test_bad_sigma_rels_are_one_sentence(sigma_rels):
    with pytest.raises(ValueError, match=r"^PostHocEMA needs distinct sigma_rels between 0 and 0\.28"):
        PostHocEMA(sigma_rels=sigma_rels)
