"""The image configs fitted through the real CLI on the generated MNIST files, with a tiny UNet."""

from conftest import REPO, cpu_overrides

MNIST_COND = REPO / "configs" / "mnist_cond.yaml"
MNIST = REPO / "configs" / "mnist.yaml"
TINY_UNET = [
    "--model.denoiser.init_args.block_out_channels",
    "[32, 32, 32]",
    "--model.denoiser.init_args.attention_levels",
    "[]",
    "--model.denoiser.init_args.layers_per_block",
    "1",
]


def fit(config, out, data_root, *extra):
    from lightning_diffusion.cli import main

    args = ["fit", "--config", str(config), *cpu_overrides(config, data_root), *TINY_UNET, *extra]
    return main([*args, "--output_dir", str(out), "--trainer.enable_progress_bar", "false"])
