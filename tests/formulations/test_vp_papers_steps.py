"""VP, where the papers' steps are the reference: the pure-torch DDPM (Ho et al. 2020) and DDIM (Song et al. 2021)
steps match diffusers' DDPMScheduler and DDIMScheduler on the same noise, with any network and prediction type, and
recover a Gaussian from its exact eps."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import MLPDenoiser


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize(
    "steps, spacing, clip",
    [(1000, "leading", False), (50, "leading", True), (30, "trailing", False), (25, "linspace", True)],
)
def test_diffusers_ddpm_matches_the_papers_step(prediction_type, steps, spacing, clip):
    """DDPMScheduler and `ddpm` (Ho et al. 2020, eq. 7 and 11) agree to 1e-5 with any network, on the same noise."""
    scheduler = DDPMScheduler(clip_sample=clip, timestep_spacing=spacing)
    model = DiffusionModule(
        denoiser=MLPDenoiser(hidden_dim=32, num_blocks=1),
        scheduler=scheduler,
        prediction_type=prediction_type,
        sample_shape=(2,),
    )
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    ours = model.sample(
        16, sampler="ddpm", num_inference_steps=steps, noise=z, generator=torch.Generator().manual_seed(1)
    )
    theirs = model.sample(
        16, sampler="DDPMScheduler", num_inference_steps=steps, noise=z, generator=torch.Generator().manual_seed(1)
    )
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize(
    "steps, spacing, clip, eta",
    [
        (50, "leading", False, 0.0),
        (20, "trailing", True, 0.0),
        (40, "leading", True, 1.0),
        (10, "linspace", False, 0.5),
    ],
)
def test_diffusers_ddim_matches_the_papers_step(prediction_type, steps, spacing, clip, eta):
    """DDIMScheduler and `ddim` (Song et al. 2021, eq. 12) agree to 1e-5, deterministic (eta 0) or not."""
    scheduler = DDPMScheduler(clip_sample=clip, timestep_spacing=spacing)
    model = DiffusionModule(
        denoiser=MLPDenoiser(hidden_dim=32, num_blocks=1),
        scheduler=scheduler,
        prediction_type=prediction_type,
        sample_shape=(2,),
    )
    z = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    ours = model.sample(
        16,
        sampler="ddim",
        sampler_kwargs={"eta": eta},
        num_inference_steps=steps,
        noise=z,
        generator=torch.Generator().manual_seed(1),
    )
    theirs = DDIMScheduler.from_config(scheduler.config, prediction_type=prediction_type)
    theirs.set_timesteps(steps)
    x, g = z.clone(), torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in theirs.timesteps:
            x = theirs.step(
                model.denoiser(x, t.expand(16)), t, x, eta=eta, generator=g, use_clipped_model_output=clip
            ).prev_sample
    assert torch.allclose(ours, x, atol=1e-5), (ours - x).abs().max()


def test_the_papers_steps_recover_the_gaussian():
    """The oracle of a Gaussian N(0.7, 0.5^2) under VP (its exact eps): ancestral DDPM and deterministic DDIM
    recover its mean and standard deviation."""
    from test_schedulers import GaussianOracle

    scheduler = DDPMScheduler(clip_sample=False)
    model = DiffusionModule(
        denoiser=GaussianOracle(scheduler.alphas_cumprod, 0.7, 0.5, "epsilon"), scheduler=scheduler, sample_shape=(2,)
    )
    for sampler, steps in (("ddpm", 1000), ("ddim", 200)):  # trailing: DDIM starts at t = T - 1 (Lin et al. 2024)
        x = model.sample(
            4000,
            sampler=sampler,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(3),
            data_space=False,
            sampler_kwargs={"timestep_spacing": "trailing"},
        )
        assert abs(x.mean().item() - 0.7) < 0.02 and abs(x.std().item() - 0.5) < 0.02, sampler
