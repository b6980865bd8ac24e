"""The quality checks of tests/helpers/quality.py can fail: real moons and the session's trained model pass them; a
Gaussian fitted to the data, the trained model read with the wrong target and the same run after half its epochs do
not."""

import torch
from helpers.quality import fitted_gaussian, moons_arcs, moons_failures, real_moons, swd_failure

from lightning_diffusion import DiffusionModule
from lightning_diffusion.metrics.distances import sliced_wasserstein

SAMPLER = dict(sampler="DPMSolverMultistepScheduler", num_inference_steps=20)


def samples(checkpoint, n=2000, data_space=True, **overrides):
    model = DiffusionModule.load_from_checkpoint(checkpoint, **overrides)
    return model.sample(n, generator=torch.Generator().manual_seed(0), data_space=data_space, **SAMPLER)


def test_real_moons_pass_and_gaussians_fail():
    assert moons_failures(real_moons(2000, seed=1)) == []
    fitted = moons_failures(fitted_gaussian(real_moons(2000, seed=2), 2000))
    assert any("on the moons" in f for f in fitted) and any("SWD" in f for f in fitted), fitted
    standard = moons_failures(torch.randn(2000, 2))  # the "model that learned nothing" of the old thresholds
    assert any("on the moons" in f for f in standard) and any("SWD" in f for f in standard), standard


def test_every_structure_check_can_fail():
    real = real_moons(4000, seed=3)
    upper, lower = moons_arcs()
    one_moon = real[torch.cdist(real, upper).min(1).values < torch.cdist(real, lower).min(1).values]
    assert any("the upper moon holds" in f for f in moons_failures(one_moon[:1000]))
    left_half = real[real[:, 0] < 0.5]  # both moons, but only their left halves
    assert any("of the arcs reached" in f for f in moons_failures(left_half[:1000]))
    assert "non-finite samples" in moons_failures(torch.cat([real[:999], torch.full((1, 2), float("nan"))]))


def test_trained_model_passes_and_wrong_target_and_half_trained_fail(trained_moons):
    assert moons_failures(samples(trained_moons.last)) == []
    wrong = moons_failures(samples(trained_moons.last, prediction_type="epsilon"))  # its v read as eps
    assert any("on the moons" in f for f in wrong) and any("SWD" in f for f in wrong), wrong
    half = moons_failures(samples(trained_moons.half_trained))
    assert any("on the moons" in f for f in half), half


def test_swd_yardstick_fails_a_gaussian_and_the_wrong_target(trained_moons):
    """swd_failure, as test_training applies it to the logged val/swd: in model space, against the held-out set."""
    train, val = trained_moons.splits()
    held_out = val[:1000]
    assert swd_failure(sliced_wasserstein(val[1000:2000], held_out).item(), held_out, train) is None  # real vs real
    gaussian = fitted_gaussian(train, 1000, seed=7)  # another draw than the yardstick's
    assert swd_failure(sliced_wasserstein(gaussian, held_out).item(), held_out, train) is not None
    wrong = samples(trained_moons.last, 1000, data_space=False, prediction_type="epsilon")
    assert swd_failure(sliced_wasserstein(wrong, held_out).item(), held_out, train) is not None
    assert (
        swd_failure(
            sliced_wasserstein(samples(trained_moons.last, 1000, data_space=False), held_out).item(), held_out, train
        )
        is None
    )
