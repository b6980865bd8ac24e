"""`python -m lightning_diffusion evaluate` on images: a grid of a tiny conditional UNet streams through the
classifier (guidance, NFE, predict's samples.npz scored as they are), and scored samples name the sampler that made
them."""

import pytest
from conftest import REPO, cpu_overrides
from helpers.evaluate_runs import rows_of, run

MNIST_COND, CLASSIFIER = REPO / "configs/mnist_cond.yaml", REPO / "configs/mnist_classifier.yaml"


@pytest.fixture(scope="module")
def image_runs(fake_mnist_root, tmp_path_factory):
    """mnist_cond (2 training steps of a 32-channel UNet, 28x28) and a narrow classifier of the same digits, through
    the CLI on generated MNIST, and a `predict` of the first."""
    from lightning_diffusion.cli import main

    out = tmp_path_factory.mktemp("image_runs")
    common = ["--output_dir", str(out), "--trainer.enable_progress_bar", "false", "--data.init_args.pad_to_32", "false"]
    main(
        [
            "fit",
            "--config",
            str(CLASSIFIER),
            *cpu_overrides(CLASSIFIER, fake_mnist_root),
            *common,
            "--trainer.max_epochs",
            "2",
            "--data.init_args.batch_size",
            "32",
        ]
    )
    model = ["--config", str(MNIST_COND), *cpu_overrides(MNIST_COND, fake_mnist_root), *common]
    main(
        [
            "fit",
            *model,
            "--trainer.max_steps",
            "2",
            "--trainer.limit_val_batches",
            "0",
            "--model.denoiser.init_args.block_out_channels",
            "[32, 32]",
            "--model.denoiser.init_args.attention_levels",
            "[]",
        ]
    )
    main(
        [
            "predict",
            *model,
            "--ckpt_path",
            "last",
            "--data.init_args.predict_num_samples",
            "30",
            "--model.sampler",
            "DDIMScheduler",
            "--model.num_inference_steps",
            "2",
        ]
    )
    # the sampler left to the formulation (its config.yaml says null)
    main(
        [
            "predict",
            *model,
            "--ckpt_path",
            str(out / "mnist_cond/version_0/checkpoints/last.ckpt"),
            "--experiment",
            "unset_sampler",
            "--data.init_args.predict_num_samples",
            "4",
            "--model.sampler",
            "null",
            "--model.num_inference_steps",
            "2",
            "--model.guidance_scale",
            "1.5",
        ]
    )
    return out


def test_image_grid_streams_through_the_classifier(image_runs, tmp_path):
    classifier = image_runs / "mnist_classifier"
    predicted = next((image_runs / "mnist_cond").rglob("samples.npz"))
    folder = run(
        tmp_path,
        "--runs",
        f"[{image_runs / 'mnist_cond' / 'version_0'}]",
        "--samplers",
        "[DDIMScheduler]",
        "--steps",
        "[2, 3]",
        "--guidance",
        "[1.0, 2.0]",
        "--num_samples",
        "30",
        "--num_seeds",
        "2",
        "--batch_size",
        "8",
        "--reference",
        "train",
        "--classifier",
        str(classifier),
        "--inception_weights",
        "null",
        "--samples",
        f"[{predicted}]",
    )
    columns, rows = rows_of(folder)
    assert {
        "classifier_fd",
        "classifier_fd_std",
        "classifier_fd_floor",
        "classifier_kid",
        "classifier_kid_floor",
        "classifier_accuracy",
        "classifier_accuracy_std",
        "classifier_accuracy_real",
    } <= set(columns)
    grid, scored = rows[:4], rows[4]
    # NFE per sample: a guided step evaluates the conditional and the unconditional model (in one batched call)
    assert sorted((r["steps"], r["guidance"], r["nfe"]) for r in grid) == [
        ("2", "1.0", "2"),
        ("2", "2.0", "4"),
        ("3", "1.0", "3"),
        ("3", "2.0", "6"),
    ]
    assert all(float(r["classifier_fd"]) > float(r["classifier_fd_floor"]) for r in grid)  # two training steps
    assert scored["checkpoint"] == str(predicted) and scored["samples"] == "30" and scored["sampler"] == "DDIMScheduler"
    assert scored["nfe"] == "" and float(scored["classifier_fd"]) > 0
    assert (folder / "quality_vs_guidance.png").is_file() and (folder / "quality_vs_nfe.png").is_file()
    assert float(grid[0]["classifier_accuracy_real"]) > 0.9  # the floor set: 30 held-out digits the judge knows


def test_scored_samples_name_the_sampler_that_made_them(image_runs, tmp_path):
    """samples.npz carries its sampler, steps and guidance (predict writes them), also where the config left the
    sampler to the formulation (before: the row said sampler None)."""
    predicted = next((image_runs / "unset_sampler").rglob("samples.npz"))
    folder = run(
        tmp_path,
        "--samples",
        f"[{predicted}]",
        "--reference",
        "train",
        "--inception_weights",
        "null",
        "--classifier",
        str(image_runs / "mnist_classifier"),
    )
    (row,) = rows_of(folder)[1]
    assert (row["sampler"], row["steps"], row["guidance"], row["samples"]) == ("DDPMScheduler", "2", "1.5", "4")
