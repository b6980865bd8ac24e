"""The formulations' math against exact answers: EDM's preconditioning is Table 1; for a point mass and a Gaussian,
whose exact denoisers are known in closed form, each formulation's loss is zero at the exact target and every one of
its samplers lands on the known sample; the pure-torch DDPM and DDIM steps are the reference that diffusers'
DDPMScheduler and DDIMScheduler match on the same noise."""

import math

import pytest
import torch
from conftest import REPO
from diffusers import DDIMScheduler, DDPMScheduler, EDMEulerScheduler
from torch import nn

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import MLPDenoiser
from lightning_diffusion.formulations import EDM, VP, FlowMatching
from lightning_diffusion.formulations.edm import karras_sigmas, preconditioning
from lightning_diffusion.formulations.flow import NETWORK_TIME, time_grid

MU, S = torch.tensor([1.5, -0.5]), torch.tensor([0.3, 0.8])  # a Gaussian N(MU, diag(S^2)) in 2D


class EDMOracle(nn.Module):
    """The exact network F of EDM for Gaussian data (S = 0: a point mass at MU): D(x; sigma) = E[x0 | x] =
    MU + S^2 / (S^2 + sigma^2) (x - MU), and F = (D - c_skip x) / c_out, from the network's inputs c_in x, c_noise."""

    def __init__(self, sigma_data: float, s: torch.Tensor = S) -> None:
        super().__init__()
        self.sigma_data, self.s = sigma_data, s

    def forward(self, x_in, c_noise, class_labels=None):
        sigma = (4 * c_noise.double()).exp()[:, None]
        c = preconditioning(sigma, self.sigma_data)
        x = x_in.double() / c["c_in"]
        d = MU + self.s**2 / (self.s**2 + sigma**2) * (x - MU)
        return ((d - c["c_skip"] * x) / c["c_out"]).float()


class FlowOracle(nn.Module):
    """The exact velocity of flow matching for Gaussian data: with a = 1 - t and var = a^2 S^2 + t^2,
    E[x0 | x_t] = MU + a S^2 / var (x_t - a MU), E[eps | x_t] = t / var (x_t - a MU), v = E[eps - x0 | x_t]."""

    def __init__(self, s: torch.Tensor = S) -> None:
        super().__init__()
        self.s = s

    def forward(self, x_t, time, class_labels=None):
        t = (time.double() / NETWORK_TIME)[:, None]
        a, x = 1 - t, x_t.double()
        var = a**2 * self.s**2 + t**2
        x0 = MU + a * self.s**2 / var * (x - a * MU)
        eps = t / var * (x - a * MU)
        return (eps - x0).float()


def module(formulation, oracle, sampler, **kwargs):
    return DiffusionModule(denoiser=oracle, formulation=formulation, sampler=sampler, sample_shape=(2,), **kwargs)


# ------------------------------------------------------------------------ EDM


def test_edm_preconditioning_is_table_1():
    """sigma_data 0.5 (the paper's) at sigma 1: c_skip = 0.25 / 1.25, c_out = 0.5 / sqrt(1.25), c_in = 1 / sqrt(1.25),
    c_noise = ln(1) / 4 = 0, lambda = 1.25 / 0.25; lambda c_out^2 = 1 at every sigma (the effective weight of F's
    loss); and diffusers' EDM schedulers precondition the same way."""
    c = preconditioning(torch.tensor(1.0), 0.5)
    assert c["c_skip"].item() == pytest.approx(0.2)
    assert c["c_out"].item() == pytest.approx(0.4472135955)
    assert c["c_in"].item() == pytest.approx(0.894427191)
    assert c["c_noise"].item() == 0.0
    assert c["weight"].item() == pytest.approx(5.0)
    sigma = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0], dtype=torch.float64)
    c = preconditioning(sigma, 0.5)
    assert torch.allclose(c["weight"] * c["c_out"] ** 2, torch.ones_like(sigma))
    assert torch.allclose(c["c_noise"], sigma.log() / 4)
    reference = EDMEulerScheduler(sigma_data=0.5)
    x, f = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(reference.precondition_inputs(x, sigma[:, None]), c["c_in"][:, None] * x)
    assert torch.allclose(reference.precondition_noise(sigma), c["c_noise"])
    assert torch.allclose(
        reference.precondition_outputs(x, f, sigma[:, None]), c["c_skip"][:, None] * x + c["c_out"][:, None] * f
    )


def test_karras_sigmas_are_eq_5():
    sigmas = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert len(sigmas) == 19 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[17].item() == pytest.approx(0.002)
    i = 9  # (80^(1/7) + 9/17 (0.002^(1/7) - 80^(1/7)))^7
    assert sigmas[i].item() == pytest.approx((80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7)


@pytest.mark.parametrize("formulation", ["edm", "flow"])
def test_the_loss_is_zero_at_the_exact_target(formulation):
    """For a point mass the exact denoiser is known everywhere: the loss is zero (to float precision) at it, and not
    at a network that is off by a little."""
    x0 = MU.expand(64, 2).clone()
    if formulation == "edm":
        f, oracle = EDM(sigma_data=0.5), EDMOracle(0.5, s=torch.zeros(2))
    else:
        f, oracle = FlowMatching(), FlowOracle(s=torch.zeros(2))
    torch.manual_seed(0)
    assert f.loss(oracle, x0).item() < 1e-10
    off = lambda *a: oracle(*a) + 0.01  # noqa: E731
    assert f.loss(off, x0).item() == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize("sampler", ["heun", "euler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler"])
def test_edm_samplers_land_on_a_point_mass(sampler):
    model = module(EDM(sigma_data=0.5), EDMOracle(0.5, s=torch.zeros(2)), sampler)
    x = model.sample(256, num_inference_steps=8, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-4), (x - MU).abs().max()


def convergence(sample, exact, steps):
    """The largest error of `sample(steps)` and of `sample(4 steps)` against the exact answer."""
    return [(sample(n) - exact).abs().max().item() for n in (steps, 4 * steps)]


@pytest.mark.parametrize(
    "sampler, steps, order",
    [("heun", 20, 2), ("euler", 100, 1), ("EDMEulerScheduler", 100, 1), ("EDMDPMSolverMultistepScheduler", 20, 2)],
)
def test_edm_samplers_converge_to_the_exact_ode_of_a_gaussian(sampler, steps, order):
    """The probability-flow ODE of Gaussian data is linear: from x_T it ends at exactly
    MU + S (x_T - MU) / sqrt(S^2 + sigma_T^2), sample by sample. The samplers approach it at their order: 4x the
    steps divide the error by about 4^order."""
    model = module(EDM(sigma_data=0.5), EDMOracle(0.5), sampler)
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    sigma_T = 80.0 if sampler in ("heun", "euler") else math.sqrt(80.0**2 + 1)  # diffusers' init_noise_sigma
    exact = MU + S * (sigma_T * z - MU) / (S**2 + sigma_T**2).sqrt()
    coarse, fine = convergence(
        lambda n: model.sample(512, num_inference_steps=n, noise=z, data_space=False), exact, steps
    )
    assert fine < 0.02 and coarse / fine > 0.6 * 4**order, (coarse, fine)


def test_edm_stochastic_sampler_recovers_the_gaussian():
    """Algorithm 2 with S_churn adds noise on the way: not the ODE's sample, but the same distribution."""
    model = module(EDM(sigma_data=0.5), EDMOracle(0.5), "heun", sampler_kwargs={"S_churn": 40, "S_tmax": 50})
    x = model.sample(8000, num_inference_steps=96, generator=torch.Generator().manual_seed(2), data_space=False)
    assert torch.allclose(x.mean(0), MU, atol=0.03) and torch.allclose(x.std(0), S, rtol=0.05)


def test_edm_measures_sigma_data_once():
    f = EDM()
    assert torch.isnan(f.sigma_data)
    data = torch.randn(4096, 2, generator=torch.Generator().manual_seed(0)) * 0.7
    f.calibrate(lambda: data)
    assert f.sigma_data.item() == pytest.approx(0.7, rel=0.03)
    f.calibrate(lambda: data * 10)  # given or measured: kept (a resumed run restores it from the checkpoint)
    assert f.sigma_data.item() == pytest.approx(0.7, rel=0.03)
    assert "sigma_data" in f.state_dict()


# ------------------------------------------------------------------------ flow matching


def test_flow_euler_is_exact_in_one_step_for_a_point_mass():
    """From t = 1 the exact velocity of a point mass is x - MU: one Euler step to t = 0 lands on MU exactly."""
    model = module(FlowMatching(), FlowOracle(s=torch.zeros(2)), "euler")
    x = model.sample(64, num_inference_steps=1, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-6)


@pytest.mark.parametrize(
    "sampler", ["euler", "heun", "midpoint", "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler"]
)
def test_flow_samplers_land_on_a_point_mass(sampler):
    model = module(FlowMatching(), FlowOracle(s=torch.zeros(2)), sampler)
    x = model.sample(256, num_inference_steps=6, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-4), (x - MU).abs().max()


@pytest.mark.parametrize("sampler", ["euler", "heun", "midpoint"])
def test_flow_sampler_kwargs_shift_overrides_the_formulations(sampler):
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    per_call = module(FlowMatching(), FlowOracle(), sampler, sampler_kwargs={"shift": 3.0})
    configured = module(FlowMatching(shift=3.0), FlowOracle(), sampler)
    uniform = module(FlowMatching(shift=3.0), FlowOracle(), sampler, sampler_kwargs={"shift": 1.0})
    x = per_call.sample(64, num_inference_steps=4, noise=z, data_space=False)
    assert torch.equal(x, configured.sample(64, num_inference_steps=4, noise=z, data_space=False))
    assert not torch.allclose(x, uniform.sample(64, num_inference_steps=4, noise=z, data_space=False))


@pytest.mark.parametrize(
    "sampler, steps, order",
    [
        ("euler", 50, 1),
        ("heun", 12, 2),
        ("midpoint", 12, 2),
        ("FlowMatchEulerDiscreteScheduler", 50, 1),
        ("FlowMatchHeunDiscreteScheduler", 12, 2),
    ],
)
def test_flow_samplers_converge_to_the_exact_ode_of_a_gaussian(sampler, steps, order):
    """For Gaussian data the flow of the exact velocity maps noise z to MU + S z, sample by sample; the samplers
    approach it at their order."""
    model = module(FlowMatching(), FlowOracle(), sampler)
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(1))
    coarse, fine = convergence(
        lambda n: model.sample(512, num_inference_steps=n, noise=z, data_space=False), MU + S * z, steps
    )
    assert fine < 0.02 and coarse / fine > 0.6 * 4**order, (coarse, fine)


def test_flow_time_grid_and_training_times():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = time_grid(4, shift=3.0)  # SD3's shift spends more steps at high noise
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] == pytest.approx(0.75)
    torch.manual_seed(0)
    t = FlowMatching("logit_normal").training_times(20000, torch.device("cpu"))
    assert torch.logit(t).mean().abs() < 0.03 and torch.logit(t).std().item() == pytest.approx(1.0, abs=0.03)
    u = FlowMatching("uniform").training_times(20000, torch.device("cpu"))
    assert u.min() >= 0 and u.max() <= 1 and u.mean().item() == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------ VP: the papers' steps are the reference


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


# ------------------------------------------------------------------------ choosing a formulation


def test_a_formulation_refuses_what_belongs_to_another():
    with pytest.raises(ValueError, match="FlowMatching samples with euler, heun, midpoint.*'DDIMScheduler' is not"):
        module(FlowMatching(), FlowOracle(), "DDIMScheduler")
    with pytest.raises(ValueError, match="prediction_type is an option of the default VP formulation.*EDM"):
        DiffusionModule(denoiser=MLPDenoiser(), formulation=EDM(), prediction_type="v_prediction")
    with pytest.raises(ValueError, match="scheduler is an option of the default VP formulation"):
        DiffusionModule(denoiser=MLPDenoiser(), formulation=EDM(), scheduler=DDPMScheduler())
    with pytest.raises(ValueError, match="neither a scheduler.*nor a formulation"):
        DiffusionModule(denoiser=MLPDenoiser())
    with pytest.raises(
        ValueError, match="sampler_kwargs of heun has no option 'S_chur' \\(did you mean 'S_churn'\\?\\)"
    ):
        module(EDM(), EDMOracle(0.5), "heun", sampler_kwargs={"S_chur": 10})
    with pytest.raises(ValueError, match="sampler_kwargs of ddim has no option 'etta'"):
        DiffusionModule(denoiser=MLPDenoiser(), scheduler=DDPMScheduler(), sampler="ddim", sampler_kwargs={"etta": 1})
    with pytest.raises(ValueError, match="sampler_kwargs of ddpm has no option 'eta': ddpm takes timestep_spacing"):
        DiffusionModule(denoiser=MLPDenoiser(), scheduler=DDPMScheduler(), sampler="ddpm", sampler_kwargs={"eta": 1})
    with pytest.raises(ValueError, match="sampler_kwargs of midpoint has no option 'shfit' \\(did you mean 'shift'"):
        module(FlowMatching(), FlowOracle(), "midpoint", sampler_kwargs={"shfit": 2.0})
    with pytest.raises(ValueError, match="EDMEulerScheduler has no option 's_chrn' \\(did you mean 's_churn'\\?\\)"):
        module(EDM(), EDMOracle(0.5), "EDMEulerScheduler", sampler_kwargs={"s_chrn": 10})  # a step option misspelt
    unfit = module(EDM(), EDMOracle(0.5), "EDMEulerScheduler", sampler_kwargs={"s_churn": 10})
    with pytest.raises(ValueError, match="EDM's sigma_data is not known yet"):  # not NaN samples
        unfit.sample(2)


@pytest.mark.parametrize(
    "formulation", [VP(DDPMScheduler()), EDM(sigma_data=1.0), FlowMatching()], ids=["vp", "edm", "flow"]
)
def test_guidance_is_one_rule_for_every_formulation(formulation):
    """Classifier-free guidance combines the network's outputs, whatever they mean (eps, F, v): guidance 1 is the
    conditional model and 0 the unconditional one in every formulation."""
    denoiser = MLPDenoiser(num_classes=2, hidden_dim=32, num_blocks=1)
    model = DiffusionModule(
        denoiser=denoiser,
        formulation=formulation,
        sample_shape=(2,),
        num_classes=2,
        label_dropout=0.1,
        num_inference_steps=4,
    )
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])

    def run(s, y):
        return model.sample(6, class_labels=y, guidance_scale=s, noise=z, generator=torch.Generator().manual_seed(1))

    assert torch.allclose(run(0.0, labels), run(0.0, 1 - labels), atol=1e-6)  # s = 0: the null label, whatever asked
    assert not torch.allclose(run(3.0, labels), run(1.0, labels), atol=1e-3)


# ------------------------------------------------------------------------ through the CLI, to diffusers


@pytest.mark.parametrize(
    "config, scheduler",
    [("mnist_cond_edm.yaml", "EDMEulerScheduler"), ("mnist_cond_flow.yaml", "FlowMatchEulerDiscreteScheduler")],
)
def test_image_formulations_train_sample_and_export(tmp_path, fake_mnist_root, config, scheduler):
    """A conditional EDM or flow UNet trains through the CLI, reloads with load_from_checkpoint and samples with
    guidance, and exports its UNet with the matching diffusers scheduler (EDM's measured sigma_data in it), which
    turns the UNet's output into the same x0 as the formulation."""
    import json

    import diffusers
    from helpers.image_runs import fit

    from lightning_diffusion.tools.export import export

    fit(
        REPO / "configs" / config,
        tmp_path,
        fake_mnist_root,
        "--trainer.max_steps",
        "2",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.num_sanity_val_steps",
        "0",
        "--data.init_args.batch_size",
        "4",
    )
    (ckpt,) = tmp_path.glob("*/version_0/checkpoints/last.ckpt")
    model = DiffusionModule.load_from_checkpoint(ckpt, map_location="cpu")
    images = model.sample(
        2, class_labels=[3, 7], num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)
    )
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()
    folder = export(ckpt, tmp_path / "export")
    info = json.loads((folder / "lightning_diffusion.json").read_text())
    assert info["formulation"] == type(model.formulation).__name__ and info["num_classes"] == 10
    exported = getattr(diffusers, scheduler).from_pretrained(folder / "scheduler")
    assert type(exported).__name__ == scheduler
    if isinstance(model.formulation, EDM):
        sigma_data = model.formulation.sigma_data.item()
        assert 0.3 < sigma_data < 1.0 and exported.config.sigma_data == pytest.approx(sigma_data)
        x, f, sigma = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32), torch.tensor(2.0)
        c = preconditioning(sigma, sigma_data)
        assert torch.allclose(exported.precondition_outputs(x, f, sigma), c["c_skip"] * x + c["c_out"] * f, atol=1e-6)
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet")
    assert torch.equal(unet.conv_in.weight, model.denoiser.unet.conv_in.weight)


def test_validate_records_the_sampler_the_formulation_chose(tmp_path):
    """metrics_validate.json names the sampler and steps that made its metrics, also where the config left both to
    the formulation's defaults (flow matching: Euler)."""
    import json

    from lightning_diffusion.cli import main

    quiet = [
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.num_samples",
        "512",
        "--data.init_args.num_val_samples",
        "256",
        "--model.val_num_samples",
        "64",
    ]
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/moons_flow.yaml"),
            "--model.sampler",
            "null",
            "--model.num_inference_steps",
            "null",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "0",
            "--output_dir",
            str(tmp_path),
            *quiet,
        ]
    )
    (run,) = tmp_path.glob("moons_flow/version_0")
    main(
        [
            "validate",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints/last.ckpt"),
            "--trainer.limit_val_batches",
            "1.0",
            "--output_dir",
            str(tmp_path / "validate"),
            *quiet,
        ]
    )
    (path,) = (tmp_path / "validate").rglob("metrics_validate.json")
    record = json.loads(path.read_text())
    model = DiffusionModule.load_from_checkpoint(run / "checkpoints/last.ckpt", map_location="cpu")
    assert (record["sampler"], record["num_inference_steps"]) == ("euler", model.num_inference_steps) != ("euler", None)
    assert record["num_samples"] == 64 and "val/swd" in record["metrics"]
