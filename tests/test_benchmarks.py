"""The benchmarks' small modes, so that the scripts cannot rot (their numbers are not asserted: speed is measured
in benchmarks/, not in timed tests)."""

import importlib.util

from conftest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_small_mode(tmp_path):
    notes = tmp_path / "benchmarks.md"
    report = load("overhead").main(["--steps", "2", "--repeats", "1", "--devices", "cpu", "--notes", str(notes)])
    assert "| MLP 2D (moons.yaml) | cpu | 256 | 2 |" in report and "| UNet 32x32 (mnist.yaml) | cpu | 16 | 2 |" in report
    assert notes.read_text() == report


def test_dataloader_small_mode(tmp_path):
    report = load("dataloader").main(["--num_images", "40", "--workers", "0", "--batch_size", "4", "--notes", ""])
    assert "| decode + cache (once," in report and "| train epoch from the cache | 0 |" in report


def test_throughput_small_mode():
    report = load("throughput").main([
        "--device", "cpu", "--steps", "1", "--warmup", "1", "--batch_size", "2", "--configs", "mnist_cond",
        "--variants", "fp32", "--notes", "",
    ])
    assert "| mnist_cond | fp32 |" in report
