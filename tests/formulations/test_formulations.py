"""What holds across the formulations (VP, EDM, flow matching): the loss is zero at the exact target, a formulation
refuses the options of another, classifier-free guidance is one rule for all, and through the CLI an image
formulation trains, samples, exports to diffusers and records the sampler it chose. The math of each against exact
answers: test_edm.py, test_flow_matching.py and test_vp_papers_steps.py."""

import pytest
import torch
from conftest import REPO
from diffusers import DDPMScheduler
from helpers.oracles import MU, EDMOracle, FlowOracle, module

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import MLPDenoiser
from lightning_diffusion.formulations import EDM, VP, FlowMatching
from lightning_diffusion.formulations.edm import preconditioning


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
        "--data.init_args.batch_size",
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
            "--model.sampler_kwargs",
            "{}",
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
