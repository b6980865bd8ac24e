"""The summary at the end of a fit and a validate (callbacks.RunSummary), through the real CLI on a tiny moons run:
it names files that exist, the metrics that metrics.csv holds, and a predict command that runs."""

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from lightning_diffusion.callbacks import RunSummary
from lightning_diffusion.callbacks.summary import metric_lines

TINY = [
    *("--config", str(REPO / "configs/moons.yaml"), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"),
    *(
        "--trainer.limit_val_batches",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--model.val_num_samples",
        "200",
        "--model.num_inference_steps",
        "5",
    ),
    *(
        "--data.init_args.num_samples",
        "1000",
        "--data.init_args.num_val_samples",
        "512",
        "--data.init_args.batch_size",
        "256",
    ),
]


def summary_of(cli) -> str:
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, RunSummary)]
    return callback.text


def named_paths(text: str) -> list[Path]:
    return [Path(word) for word in text.split() if "/" in word and not word.startswith("val/")]


def fit_summary(run_cli) -> tuple[str, Path]:
    text = summary_of(run_cli("fit", *TINY))
    return text, Path(re.search(r"Run folder: (\S+)", text).group(1))


def test_the_fit_summary_names_existing_files_and_the_metrics_of_metrics_csv(run_cli):
    text, run = fit_summary(run_cli)
    assert run.name == "version_0" and set((run / "plots").iterdir()) <= set(named_paths(text))
    assert all(path.exists() for path in named_paths(text)), text
    assert re.search(r"Checkpoint: \S+last\.ckpt", text), text
    final = pd.read_csv(run / "metrics.csv").ffill().iloc[-1]
    for name in ("val/swd", "val/mmd"):
        value, floor, spread = (float(x) for x in re.search(rf"{name} (\S+) \(floor (\S+) ± ([^),]+)", text).groups())
        assert value == pytest.approx(final[name], rel=1e-3) and floor == pytest.approx(
            final[f"{name}_floor"], rel=1e-3
        )
        assert spread == pytest.approx(final[f"{name}_floor_std"], rel=1e-3)
    assert f"ratio {final['val/swd_ratio']:.3f}" in text


@pytest.mark.slow
def test_the_printed_command_samples_and_validate_summarizes_too(run_cli):
    text, run = fit_summary(run_cli)
    command = shlex.split(re.search(r"Sample from it: python -m lightning_diffusion (.+)", text).group(1))
    assert command[:2] == ["predict", "--config"] and Path(command[2]) == run / "config.yaml"
    checkpoint = command[command.index("--ckpt_path") + 1]
    validated = summary_of(run_cli("validate", "--config", command[2], "--ckpt_path", checkpoint))
    assert "lightning-diffusion validate done" in validated and f"Checkpoint: {checkpoint}" in validated
    assert "val/swd " in validated and all(path.exists() for path in named_paths(validated)), validated
    run_cli(*command, "--data.init_args.predict_num_samples", "16")  # the printed command samples
    assert len(list(run.parent.rglob("samples.npz"))) == 1


def test_a_difference_within_the_spread_is_said_to_be_so():
    near, far = {"m": 1.02, "m_floor": 1.0, "m_floor_std": 0.05}, {"m": 1.2, "m_floor": 1.0, "m_floor_std": 0.05}
    assert "is not larger than the spread" in metric_lines(near)[0]
    assert "is larger than the spread" in metric_lines(far)[0]
    assert "unknown" in metric_lines({"fid": 3.0, "fid_floor": 1.0})[0]
