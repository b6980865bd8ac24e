"""The benchmarks' small modes, so that the scripts cannot rot (their numbers are not asserted: speed is measured
in benchmarks/, not in timed tests)."""

import importlib.util

import pytest
from conftest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_small_mode(tmp_path):
    notes = tmp_path / "benchmarks.md"
    # the MLP only: the UNet case runs the same two loops, at a second per CPU step
    report = load("overhead").main(
        ["--steps", "2", "--repeats", "2", "--devices", "cpu", "--cases", "MLP", "--notes", str(notes)]
    )
    assert "| MLP 2D (moons.yaml) | cpu | 256 | 2 |" in report and "UNet" not in report
    assert notes.read_text() == report


def test_syncs_small_mode():
    report = load("syncs").main(
        ["--device", "cpu", "--configs", "moons", "--steps", "4", "--log_every_n_steps", "2", "--notes", ""]
    )
    (row,) = [line for line in report.splitlines() if line.startswith("| moons | cpu |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # 19 batches an epoch: moons.yaml's 20,000 samples in batches of 1,024
    assert cells[:5] == ["moons", "cpu", "4", "2", "19"] and cells[6] == "(a GPU only)"
    other, logging, last = cells[5].split(" / ")
    # no sync in a step that does not log; how many a logging step makes is up to Lightning's logging
    assert other == "0" and int(logging) > 0 and last == "-"


def test_hand_loop_2d_small_mode():
    report = load("hand_loop_2d").main(["--seconds", "0.5", "--seeds", "2", "--num_samples", "400", "--notes", ""])
    rows = [line for line in report.splitlines() if line.startswith("| DDPM 1000 |") or line.startswith("| DPM-Solver")]
    assert len(rows) == 2 and "400 samples" in report
    for row in rows:  # two ratios with their spread over the seeds, each above 0
        ratios = [float(cell.split(" ± ")[0]) for cell in row.strip("|").split("|")[1:]]
        assert len(ratios) == 2 and all(r > 0 for r in ratios)


def test_dataloader_small_mode(tmp_path):
    report = load("dataloader").main(
        [
            "--num_images",
            "40",
            "--workers",
            "0",
            "--batch_size",
            "4",
            "--num_digits",
            "120",
            "--mnist_batch_size",
            "8",
            "--notes",
            "",
        ]
    )
    assert (
        "| CelebFaces: decode + cache (once," in report and "| CelebFaces: train epoch from the cache | 0 |" in report
    )
    assert "| MNIST: train epoch (120 digits) | 0 |" in report


@pytest.mark.slow  # prepare's processes and an epoch in a process of its own: 9 s
def test_streaming_scale_small_mode():
    report = load("streaming_scale").main(["--sizes", "128", "--workers", "1", "--chunk_bytes", "1MB", "--notes", ""])
    (row,) = [line for line in report.splitlines() if line.startswith("| 128 |")]
    assert len(row.strip("|").split("|")) == 5


def test_throughput_small_mode():
    """One process, then 2-process DDP under torchrun (gloo on the CPU)."""
    report = load("throughput").main(
        [
            "--device",
            "cpu",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--batch_size",
            "2",
            "--configs",
            "mnist_cond",
            "--variants",
            "fp32",
            "--devices",
            "1",
            "2",
            "--notes",
            "",
        ]
    )
    assert "| mnist_cond | 1 | fp32 |" in report and "| mnist_cond | 2 | fp32 |" in report


def test_cpu_benchmark_configs_compose(fake_mnist_root, run_cli):
    """configs/benchmarks/: the classifier and the small UNet of the CPU sampler table, over the shipped configs."""
    fragments = ["--config", str(REPO / "configs/benchmarks/mnist_5k_cpu.yaml")]
    short = [
        "--data.init_args.root",
        str(fake_mnist_root),
        "--data.init_args.num_val_samples",
        "16",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    classifier = run_cli(
        "fit",
        "--config",
        str(REPO / "configs/mnist_classifier.yaml"),
        *fragments,
        "--data.init_args.pad_to_32",
        "false",
        *short,
    )
    diffusion = run_cli(
        "fit",
        "--config",
        str(REPO / "configs/mnist_cond.yaml"),
        *fragments,
        "--config",
        str(REPO / "configs/benchmarks/mnist_cond_cpu.yaml"),
        *short,
    )
    for cli in (classifier, diffusion):
        assert cli.trainer.global_step == 2 and cli.trainer.precision == "32-true"
        assert tuple(cli.model.hparams.sample_shape) == (
            1,
            28,
            28,
        )  # unpadded: the classifier judges the diffusion model's samples
    unet = diffusion.model.denoiser.unet
    assert list(unet.config.block_out_channels) == [32, 64, 64] and unet.config.layers_per_block == 1
    assert "Attn" not in "".join(unet.config.down_block_types)
    assert diffusion.model.hparams.num_inference_steps == 20 and diffusion.trainer.max_epochs == 80
