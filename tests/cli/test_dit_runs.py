"""The DiT through the real CLI: one command-line swap from the UNet for every formulation, bf16-mixed, a checkpoint
that loads and samples, and torch.compile (slow)."""

import pytest
import torch
from conftest import REPO, cpu_overrides

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import DiTDenoiser

MNIST_DIT = REPO / "configs" / "mnist_cond_dit.yaml"
SWAP = ["--model.denoiser", "lightning_diffusion.denoisers.DiTDenoiser"]  # the UNet's options go with its class
SHORT = [
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
]


@pytest.mark.parametrize(
    "config, formulation",
    [("mnist_cond.yaml", "VP"), ("mnist_cond_edm.yaml", "EDM"), ("mnist_cond_flow.yaml", "FlowMatching")],
)
def test_a_tiny_dit_replaces_the_unet_for_every_formulation(run_cli, fake_mnist_root, config, formulation):
    """A UNet config with its denoiser swapped for a DiT on the command line trains a step and samples its
    validation grid (VP: DDPM's epsilon on integer timesteps; EDM: c_noise; flow: 1000 t)."""
    cli = run_cli(
        "fit",
        "--config",
        str(REPO / "configs" / config),
        *SWAP,
        *cpu_overrides(MNIST_DIT, fake_mnist_root),  # the data of every MNIST config, and a 2-block DiT 32 wide
        "--trainer.fast_dev_run",
        "true",
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert type(cli.model.formulation).__name__ == formulation
    dit = cli.model.denoiser
    assert isinstance(dit, DiTDenoiser) and len(dit.blocks) == 2 and dit.num_classes == 10
    assert dit.final_layer.linear.weight.abs().max() > 0  # the optimizer step moved the zero-initialised decoder


def test_the_dit_config_trains_in_bf16_mixed_and_its_checkpoint_loads_and_samples(run_cli, tmp_path, fake_mnist_root):
    overrides = cpu_overrides(MNIST_DIT, fake_mnist_root)
    overrides[overrides.index("--trainer.precision") + 1] = "bf16-mixed"  # the config's own precision
    cli = run_cli("fit", "--config", str(MNIST_DIT), *overrides, *SHORT)
    assert cli.trainer.precision == "bf16-mixed" and cli.trainer.global_step == 2
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    model = DiffusionModule.load_from_checkpoint(ckpt, map_location="cpu")
    assert isinstance(model.denoiser, DiTDenoiser) and model.denoiser.patch_size == 2
    for name, tensor in cli.model.denoiser.state_dict().items():
        assert torch.equal(tensor.cpu(), model.denoiser.state_dict()[name]), name
    torch.testing.assert_close(model.denoiser.pos_embed, cli.model.denoiser.pos_embed)  # rebuilt, not loaded
    images = model.sample(
        2, class_labels=[3, 7], num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)
    )
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all() and images.std() > 0


@pytest.mark.slow
def test_a_compiled_dit_trains_and_its_checkpoint_samples_without_compile(run_cli, tmp_path, fake_mnist_root):
    cli = run_cli(
        "fit", "--config", str(MNIST_DIT), *cpu_overrides(MNIST_DIT, fake_mnist_root), *SHORT, "--model.compile", "true"
    )
    assert cli.model.denoiser._compiled_call_impl is not None  # what nn.Module.compile sets: training was compiled
    (ckpt,) = (tmp_path / "outputs").rglob("last.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    model = DiffusionModule.load_from_checkpoint(ckpt, map_location="cpu", compile=False)
    images = model.sample(2, class_labels=[0, 1], num_inference_steps=2)
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()
