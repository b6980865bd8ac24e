"""The schedule and forward-process inspection command, on real 2D batches and generated MNIST files."""

import numpy as np
from conftest import REPO

from lightning_diffusion.__main__ import main as command


def main(argv):
    return command(["inspect", *argv])


def test_moons_schedule_and_l2_dynamics_match_theory(tmp_path):
    folder = main(
        ["--config", str(REPO / "configs/moons.yaml"), "--output_dir", str(tmp_path), "--num_samples", "4096"]
    )
    assert {p.name for p in folder.iterdir()} == {"schedule.png", "l2_dynamics.png", "l2_dynamics.csv"}
    table = np.loadtxt(folder / "l2_dynamics.csv", delimiter=",", skiprows=1)
    t, measured, theory = table.T
    assert abs(theory[0] - 1.0) < 0.02 and abs(theory[-1] - 1.0) < 0.02  # standardized data: E||x0||^2/d = 1
    assert np.abs(measured - theory).max() < 0.05  # 4096 points in 2D: the sampling error is a few percent


def test_image_forward_process_grid(tmp_path, fake_mnist_root):
    from PIL import Image

    folder = main(
        [
            "--config",
            str(REPO / "configs/mnist.yaml"),
            "--output_dir",
            str(tmp_path),
            "--num_samples",
            "64",
            "--timesteps",
            "[0, 500, 999]",
            "--data.init_args.root",
            str(fake_mnist_root),
            "--data.init_args.download",
            "false",
            "--data.init_args.num_workers",
            "0",
            "--data.init_args.persistent_workers",
            "false",
            "--data.init_args.num_val_samples",
            "16",
            "--trainer.accelerator",
            "cpu",
        ]
    )
    width, height = Image.open(folder / "forward_process.png").size
    assert (width, height) == (3 * 34 + 2, 4 * 34 + 2)  # 3 timesteps x 4 images of 32x32
    table = np.loadtxt(folder / "l2_dynamics.csv", delimiter=",", skiprows=1)
    assert np.abs(table[:, 1] - table[:, 2]).max() < 0.05
