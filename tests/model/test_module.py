"""DiffusionModule without a Trainer: losses per target, sampling, conditioning, EMA, plots."""

import pytest
import torch
from diffusers import DDPMScheduler
from helpers.fakes import PointMassOracle
from helpers.tiny_fit import SCHEDULER, make_module
from matplotlib.figure import Figure

from lightning_diffusion import DiffusionModule
from lightning_diffusion.callbacks.ema import warmup_decay
from lightning_diffusion.callbacks.trajectory import forward_frames
from lightning_diffusion.denoisers import MLPDenoiser
from lightning_diffusion.formulations import VP
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.model.checks import sample_labels
from lightning_diffusion.plotting import scatter_figure, trajectory_figure


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("weighting", ["uniform", "min_snr"])
def test_loss_is_zero_for_the_exact_target(prediction_type, weighting):
    """A denoiser that outputs the exact target has zero loss; one that outputs zeros has loss E[w * target^2]."""
    x0, eps = torch.randn(64, 2), torch.randn(64, 2)
    t = torch.randint(0, 1000, (64,))
    alpha_bar = diffusion.alpha_bar_at(SCHEDULER.alphas_cumprod, t, x0)
    target = diffusion.training_target(x0, eps, alpha_bar, prediction_type)

    class Exact(torch.nn.Module):
        def forward(self, x_t, t_, labels=None):
            return target

    class Zero(torch.nn.Module):
        def forward(self, x_t, t_, labels=None):
            return torch.zeros_like(x_t)

    args = (SCHEDULER.alphas_cumprod, prediction_type, weighting, 5.0)
    assert diffusion.diffusion_loss(Exact(), x0, *args, t=t, eps=eps).item() == pytest.approx(0.0, abs=1e-10)
    w = diffusion.loss_weight(alpha_bar.flatten(), prediction_type, weighting, 5.0)
    expected = (w * target.pow(2).mean(1)).mean()
    assert diffusion.diffusion_loss(Zero(), x0, *args, t=t, eps=eps).item() == pytest.approx(expected.item(), rel=1e-5)


def test_sample_maps_to_data_space_and_is_reproducible():
    model = make_module(num_inference_steps=10)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    raw = model.sample(8, generator=g(), data_space=False)
    data = model.sample(8, generator=g())
    assert torch.allclose(data, raw * torch.tensor([2.0, 0.5]) + torch.tensor([1.0, -2.0]))
    assert model.training  # restored after sampling in eval mode


def test_conditional_sampling_labels():
    model = make_module(num_classes=3, guidance_scale=2.0, label_dropout=0.1, num_inference_steps=5)
    assert sample_labels(5, None, 3, model.device).tolist() == [0, 1, 2, 0, 1]
    assert sample_labels(3, 2, 3, model.device).tolist() == [2, 2, 2]
    assert model.sample(4, class_labels=[0, 1, 2, 1]).shape == (4, 2)
    with pytest.raises(ValueError, match=r"class_labels must be 2 labels \(or one\) in \[0, 2\]"):
        model.sample(2, class_labels=[0, 3])
    with pytest.raises(ValueError, match="unconditional"):
        make_module().sample(2, class_labels=[0, 1])


def test_constructor_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="Unknown sampler 'Nope'"):
        make_module(sampler="Nope")
    with pytest.raises(ValueError, match="num_classes=None but the data has 4"):
        DiffusionModule(denoiser=MLPDenoiser(), scheduler=SCHEDULER, num_classes=4)
    with pytest.raises(ValueError, match="label_dropout"):
        make_module(num_classes=2, label_dropout=1.0)


def test_label_dropout_uses_the_null_label():
    model = make_module(num_classes=2, label_dropout=0.5)
    seen = []
    model.denoiser.forward = lambda x, t, labels=None: seen.append(labels) or torch.zeros_like(x)
    torch.manual_seed(0)
    model.training_step((torch.randn(400, 2), torch.zeros(400, dtype=torch.long)), 0)
    dropped = (seen[0] == 2).float().mean().item()
    assert 0.4 < dropped < 0.6 and set(seen[0].tolist()) == {0, 2}


def test_ema_decay_warms_up():
    # after 0 updates the decay is min(0.999, 1/10) = 0.1: the average moves 90% of the way
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 10) == pytest.approx(11 / 20)
    # late, the full decay applies
    assert warmup_decay(0.999, 100_000) == 0.999


@pytest.mark.parametrize("every, start", [(1, None), (2, 3)])
def test_ema_equals_the_closed_form_of_its_warmed_up_decays(every, start):
    """Parameter c_k at optimizer step k: the average after the updates u_0 < u_1 < ... is
    sum_i (1 - d_i) prod_{j > i} d_j c_{u_i}, with d_0 = 0 (the first update copies) and d_i = min(decay, (1 + i) /
    (10 + i)); validation runs on it and the checkpoint holds it as the state_dict, the training weights beside it."""
    from types import SimpleNamespace

    import lightning as L

    from lightning_diffusion.callbacks import EMA

    module = L.LightningModule()
    module.net = torch.nn.Linear(3, 2).double()
    ema = EMA(decay=0.9, update_every_n_steps=every, update_starting_at_step=start)
    ema.setup(SimpleNamespace(), module, "fit")
    values = [torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in range(20)]
    for k, value in enumerate(values):  # the optimizer step k leaves the weights at values[k]
        torch.nn.utils.vector_to_parameters(value, module.parameters())
        ema.on_train_batch_end(SimpleNamespace(global_step=k + 1), module, None, None, k)
    updated = [k for k in range(20) if (start is None or k >= start) and k % every == 0]
    decays = [0.0] + [min(0.9, (1 + i) / (10 + i)) for i in range(1, len(updated))]
    expected = torch.zeros(8, dtype=torch.float64)
    for i, k in enumerate(updated):
        expected += (1 - decays[i]) * torch.tensor(decays[i + 1 :], dtype=torch.float64).prod() * values[k]
    assert ema.num_updates == len(updated)

    trainer = SimpleNamespace(sanity_checking=False, global_step=20)
    ema.on_validation_epoch_start(trainer, module)
    assert torch.allclose(torch.nn.utils.parameters_to_vector(module.parameters()), expected, rtol=0, atol=1e-13)
    ema.on_validation_epoch_end(trainer, module)
    ema.on_validation_end(trainer, module)
    assert torch.equal(torch.nn.utils.parameters_to_vector(module.parameters()), values[-1])
    checkpoint = {"state_dict": module.state_dict()}
    ema.on_save_checkpoint(trainer, module, checkpoint)
    saved = torch.cat([checkpoint["state_dict"]["net.weight"].flatten(), checkpoint["state_dict"]["net.bias"]])
    assert torch.allclose(saved, expected, rtol=0, atol=1e-13)
    training = torch.cat(
        [checkpoint["current_model_state"]["net.weight"].flatten(), checkpoint["current_model_state"]["net.bias"]]
    )
    assert torch.equal(training, values[-1])


def test_ema_resumes_a_checkpoint_of_lightnings_weight_averaging_layout_and_saves_it_again():
    """The fixture was saved by the EMA on Lightning's WeightAveraging (3 updates): the average, the training weights,
    the update count and the last update's step come back, and a save writes the same layout and tensors."""
    from pathlib import Path
    from types import SimpleNamespace

    from lightning_diffusion.callbacks import EMA

    path = Path(__file__).parents[1] / "fixtures/moons_cond_v0.1.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = DiffusionModule.load_from_checkpoint(path)  # Lightning loads the state_dict: the EMA weights
    ema = EMA()
    ema.setup(SimpleNamespace(), model, "fit")
    ema.on_load_checkpoint(SimpleNamespace(), model, checkpoint)
    ema.load_state_dict(checkpoint["callbacks"]["EMA"])
    assert ema.num_updates == 3 and ema.latest_update_step == checkpoint["callbacks"]["EMA"]["latest_update_step"]
    saved = {"state_dict": model.state_dict()}
    ema.on_save_checkpoint(SimpleNamespace(), model, saved)
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert saved[key].keys() == checkpoint[key].keys(), key
        for name, value in checkpoint[key].items():
            assert torch.equal(saved[key][name], value), (key, name)
    assert not torch.equal(
        checkpoint["state_dict"]["denoiser.time_embedding.linear_1.weight"],
        checkpoint["current_model_state"]["denoiser.time_embedding.linear_1.weight"],
    )


def test_the_validation_record_keeps_the_first_samples_their_noise_and_steps_across_chunks():
    from lightning_diffusion.metrics.validation import generate

    model = DiffusionModule(
        denoiser=MLPDenoiser(),
        scheduler=SCHEDULER,
        sampler="DDIMScheduler",
        num_inference_steps=5,
        sample_batch_size=30,
    )
    samples, record = generate(model, 100, None, keep=70, keep_steps=40)
    assert samples.shape == (100, 2) and torch.equal(record.samples, samples[:70]) and record.noise.shape == (70, 2)
    assert len(record.steps) == 5 and all(x_t.shape == (40, 2) for _, x_t in record.steps)
    assert torch.equal(record.steps[-1][1], samples[:40])  # the x_t after the last step is the sample
    for start in (0, 30):  # the samples of each chunk come from its recorded noise
        again = model.sample(30, noise=record.noise[start : start + 30], data_space=False)
        assert torch.equal(again, samples[start : start + 30])
    _, nothing = generate(model, 100, None)
    assert len(nothing.samples) == len(nothing.noise) == 0 and nothing.steps == []


def test_forward_frames_follow_q_sample():
    x0 = torch.randn(100, 2)
    eps = torch.randn(100, 2)
    frames = forward_frames(VP(SCHEDULER), x0, eps, [0.0, 0.5, 0.999])
    assert [t for t, _ in frames] == [0, 500, 999]
    a = SCHEDULER.alphas_cumprod[500]
    assert torch.allclose(frames[1][1], a.sqrt() * x0 + (1 - a).sqrt() * eps)


def test_plots_are_pure_figures():
    real, generated = torch.randn(200, 2), torch.randn(200, 2)
    fig = scatter_figure(real, generated, "t")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    forward = [(t, torch.randn(50, 2)) for t in (0, 500, 999)]
    reverse = [(t, torch.randn(50, 2)) for t in (1000, 500, 0)]
    fig = trajectory_figure(forward, reverse, tracked_index=7)
    assert len(fig.axes) == 6
    # every panel draws the tracked point in green on top of the cloud
    for ax in fig.axes:
        tracked = ax.collections[-1]
        assert tracked.get_offsets().shape == (1, 2)
        assert tuple(tracked.get_facecolor()[0][:3]) == pytest.approx((0.17254902, 0.62745098, 0.17254902))


@pytest.mark.parametrize(
    "name", ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "ddpm", "ddim"]
)
def test_samplers_keep_the_training_clip(name):
    """With clip_sample, every sampler that can clip lands on the clip boundary for a point mass outside [-1, 1]:
    DPM-Solver/UniPC through thresholding capped at 1, DDIM through the eps of the clipped x0 (with the raw eps its
    update disagrees with its own x0 and ends elsewhere)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=True)
    target = torch.tensor([[[3.0, -0.5], [0.2, -4.0]]])  # one 2x2 image, a point mass partly outside [-1, 1]
    model = DiffusionModule(
        denoiser=PointMassOracle(scheduler.alphas_cumprod, target),
        scheduler=scheduler,
        sampler=name,
        sample_shape=(1, 2, 2),
        sampler_kwargs={"timestep_spacing": "trailing"},
    )
    x = model.sample(8, num_inference_steps=20, generator=torch.Generator().manual_seed(0), data_space=False)
    assert torch.allclose(x, target.clamp(-1, 1).expand(8, 1, 2, 2), atol=1e-3), x[0]


def test_clip_carry_over_is_overridable():
    clipped = DiffusionModule(denoiser=MLPDenoiser(), scheduler=DDPMScheduler(clip_sample=True), sample_shape=(1, 4, 4))
    sampler = clipped.formulation.make_sampler("DPMSolverMultistepScheduler", None, image_like=True).scheduler
    assert sampler.config.thresholding and sampler.config.sample_max_value == 1.0
    assert (
        not VP(SCHEDULER)
        .make_sampler("DPMSolverMultistepScheduler", None, image_like=False)
        .scheduler.config.thresholding
    )  # no clip to carry (2D)
    # a config's own choice wins
    assert not clipped.formulation.make_sampler(
        "DPMSolverMultistepScheduler", {"thresholding": False}, image_like=True
    ).scheduler.config.thresholding
