"""The guidance interval (Kynkäänniemi et al. 2024) and autoguidance (Karras et al. 2024) at sampling.

Exact oracles: a Gaussian per class, whose eps-prediction E[eps | x_t] is known in closed form; a DDIM step inside
the interval takes the guided eps, one outside the conditional eps alone, and the network sees half the rows there.
"""

import copy

import pytest
import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import MLPDenoiser
from lightning_diffusion.formulations import EDM, VP, FlowMatching
from lightning_diffusion.formulations.edm import preconditioning
from lightning_diffusion.model.guidance import GuidedNet, check_interval

SCHEDULER = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
MEANS = torch.tensor([[1.5, -0.5], [-1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)  # classes 0, 1 and the null label
S = 0.5  # the per-class standard deviation


class GaussianClasses(torch.nn.Module):
    """E[eps | x_t, y] for x0 | y ~ N(MEANS[y], S^2 I) at integer timesteps: sqrt(1 - a) (x_t - sqrt(a) mu_y) /
    (a S^2 + 1 - a); the null label's data is N(0, S^2 I). Counts the rows it evaluates."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x_t, t, class_labels=None):
        self.rows += x_t.shape[0]
        a = SCHEDULER.alphas_cumprod.double()[t.long()].view(-1, 1)
        mu = MEANS[class_labels]
        return ((1 - a).sqrt() * (x_t.double() - a.sqrt() * mu) / (a * S**2 + 1 - a)).to(x_t.dtype)


def oracle_model(**options) -> DiffusionModule:
    return DiffusionModule(
        denoiser=GaussianClasses(),
        scheduler=SCHEDULER,
        sample_shape=(2,),
        num_classes=2,
        sampler="ddim",
        label_dropout=0.1,
        **options,
    )


def hand_ddim(x: torch.Tensor, labels: torch.Tensor, w: float, guided: list[bool]) -> torch.Tensor:
    """DDIM (eta = 0) on timesteps 500 and 0, in float64 from the formulas: guided eps at the steps `guided`."""
    a = SCHEDULER.alphas_cumprod.double()
    x = x.double()
    for step, (t, prev) in enumerate([(500, a[0]), (0, torch.tensor(1.0, dtype=torch.float64))]):
        a_t = a[t]

        def eps(mu, a_t=a_t, x=x):
            return (1 - a_t).sqrt() * (x - a_t.sqrt() * mu) / (a_t * S**2 + 1 - a_t)

        e = eps(MEANS[labels])
        if guided[step]:
            e = eps(MEANS[2]) + w * (e - eps(MEANS[2]))
        x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
        x = prev.sqrt() * x0 + (1 - prev).sqrt() * e
    return x


@pytest.mark.parametrize(
    "interval,guided", [(None, [True, True]), ((1.0, 100.0), [True, False]), ((0.0, 0.5), [False, True])]
)
def test_a_ddim_step_inside_takes_the_guided_eps_and_outside_the_conditional_one(interval, guided):
    """sigma at t = 500 is 3.4 and at t = 0 0.01: [1, 100] guides the first step only, [0, 0.5] the last only."""
    model, labels = oracle_model(guidance_scale=3.0, guidance_interval=interval), torch.tensor([0, 1, 0, 1])
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    x = model.sample(4, class_labels=labels, num_inference_steps=2, noise=x_T, data_space=False)
    expected = hand_ddim(x_T, labels, 3.0, guided)
    torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, hand_ddim(x_T, labels, 3.0, [not g for g in guided]), atol=1e-3)
    assert model.denoiser.rows == 4 * sum(2 if g else 1 for g in guided)  # one evaluation where it does not guide


def conditional(formulation, seed: int = 0, **options) -> DiffusionModule:
    torch.manual_seed(seed)
    denoiser = MLPDenoiser(sample_shape=(2,), num_classes=2, hidden_dim=32, num_blocks=1)
    return DiffusionModule(denoiser=denoiser, formulation=formulation, sample_shape=(2,), num_classes=2, **options)


FORMULATIONS = {
    "vp-ddim": (lambda: VP(SCHEDULER), "ddim"),
    "vp-diffusers-karras": (lambda: VP(SCHEDULER), "EulerDiscreteScheduler"),
    "edm-heun": (lambda: EDM(sigma_data=0.5), "heun"),
    "flow-euler": (lambda: FlowMatching(), "euler"),
    "flow-diffusers": (lambda: FlowMatching(), "FlowMatchEulerDiscreteScheduler"),
}
KWARGS = {"EulerDiscreteScheduler": {"use_karras_sigmas": True}}


class Rows(torch.nn.Module):
    """The network, counting the rows it evaluates: the NFE of a sample is rows / samples."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x_t, t, class_labels=None):
        self.rows += x_t.shape[0]
        return self.net(x_t, t, class_labels)


def samples_and_nfe(name: str, **guidance) -> tuple[torch.Tensor, float]:
    formulation, sampler = FORMULATIONS[name]
    model = conditional(formulation(), sampler=sampler, sampler_kwargs=KWARGS.get(sampler), num_inference_steps=6)
    model.denoiser = Rows(model.denoiser)
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    x = model.sample(8, noise=noise, generator=torch.Generator().manual_seed(2), **guidance)
    return x, model.denoiser.rows / 8


@pytest.mark.parametrize("name", FORMULATIONS)
def test_an_interval_over_every_noise_level_is_plain_guidance_and_an_empty_one_the_conditional_model(name):
    plain, plain_nfe = samples_and_nfe(name, guidance_scale=2.5)
    everywhere, everywhere_nfe = samples_and_nfe(name, guidance_scale=2.5, guidance_interval=(0.0, float("inf")))
    nowhere, nowhere_nfe = samples_and_nfe(name, guidance_scale=2.5, guidance_interval=(1e6, 1e7))
    conditional_only, conditional_nfe = samples_and_nfe(name, guidance_scale=1.0)
    assert torch.equal(everywhere, plain) and everywhere_nfe == plain_nfe
    assert torch.equal(nowhere, conditional_only) and not torch.allclose(plain, conditional_only, atol=1e-4)
    assert nowhere_nfe == conditional_nfe == plain_nfe / 2


def test_noise_levels_are_each_formulations_sigma():
    vp = VP(SCHEDULER)
    a = SCHEDULER.alphas_cumprod
    torch.testing.assert_close(vp.noise_level(torch.arange(1000)), ((1 - a) / a).sqrt())
    # between timesteps, the sigma diffusers' Karras-sigma samplers step at (they map sigma to t in log sigma)
    euler = EulerDiscreteScheduler.from_config(SCHEDULER.config, use_karras_sigmas=True)
    euler.set_timesteps(12)
    torch.testing.assert_close(vp.noise_level(euler.timesteps), euler.sigmas[:-1], rtol=1e-4, atol=1e-6)
    sigma = torch.tensor([0.002, 0.3, 1.0, 80.0])
    c_noise = preconditioning(sigma, 0.5)["c_noise"]
    torch.testing.assert_close(EDM(sigma_data=0.5).noise_level(c_noise), sigma)
    t = torch.tensor([0.0, 0.25, 0.5, 0.9])
    torch.testing.assert_close(FlowMatching().noise_level(1000 * t), t / (1 - t))


@pytest.mark.parametrize("w", [0.0, 1.0, 2.0, 7.5])
def test_a_guide_equal_to_the_model_returns_the_model_at_any_scale(w):
    model = conditional(EDM(sigma_data=0.5))
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(3))
    t, labels = torch.full((6,), 0.1), torch.tensor([0, 1, 0, 1, 0, 1])
    alone = model.denoiser(x, t, labels)
    guided = GuidedNet(model.denoiser, model.formulation, labels, 2, w, guide=copy.deepcopy(model.denoiser))
    assert torch.equal(guided(x, t), alone)


def test_autoguidance_is_the_guide_plus_w_times_the_difference():
    model, weak = conditional(FlowMatching()), conditional(FlowMatching(), seed=1).denoiser
    x, t, labels = torch.randn(4, 2), torch.full((4,), 500.0), torch.tensor([1, 0, 1, 0])
    main_out, weak_out = model.denoiser(x, t, labels), weak(x, t, labels)
    assert not torch.allclose(main_out, weak_out)
    guided = GuidedNet(model.denoiser, model.formulation, labels, 2, 3.0, guide=weak)(x, t)
    torch.testing.assert_close(guided, weak_out + 3.0 * (main_out - weak_out))
    assert torch.equal(GuidedNet(model.denoiser, model.formulation, labels, 2, 1.0, guide=weak)(x, t), main_out)


@pytest.mark.parametrize("interval", [(2.0, 1.0), (-1.0, 1.0), (1.0,)])
def test_a_malformed_interval_is_one_sentence(interval):
    with pytest.raises(ValueError, match=r"^guidance_interval must be \[sigma_lo, sigma_hi\].*e\.g\. \[0\.28"):
        check_interval(interval)
    with pytest.raises(ValueError, match="guidance_interval must be"):
        oracle_model(guidance_interval=interval)


def vp_model(**options) -> DiffusionModule:
    denoiser = MLPDenoiser(sample_shape=options.get("sample_shape", (2,)), num_classes=None, hidden_dim=8, num_blocks=1)
    return DiffusionModule(denoiser=denoiser, **{"scheduler": SCHEDULER, **options})


@pytest.mark.parametrize(
    "guide,words",
    [
        (dict(sample_shape=(3,)), "its sample shape is (3,), the model's (2,)"),
        (dict(prediction_type="v_prediction"), "its prediction_type is v_prediction, the model's epsilon"),
        (dict(formulation=FlowMatching()), "its formulation is FlowMatching, the model's VP"),
        (dict(scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")), "noise schedule"),
    ],
)
def test_what_keeps_a_guide_from_fitting_is_named(guide, words):
    from lightning_diffusion.model.guidance import fits

    model = vp_model(sample_shape=(2,))
    options = {"sample_shape": (2,), **guide}
    if "formulation" in options:
        options["scheduler"] = None
    assert fits(model, vp_model(sample_shape=(2,))) is None
    assert words in fits(model, vp_model(**options))
