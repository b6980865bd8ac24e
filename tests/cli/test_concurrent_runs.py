"""Runs started at the same moment in one experiment each get their own version folder, with their own config and
checkpoints, and all finish (issue 25: this held before; kept tested)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO
from helpers.checkpoints import load

from lightning_diffusion.runs import fit_finished

pytestmark = pytest.mark.slow


def test_three_fits_started_at_once_get_three_version_folders(tmp_path):
    fit = [sys.executable, "-m", "lightning_diffusion", "fit", "--config", str(REPO / "configs/moons.yaml")]
    fit += ["--trainer.max_epochs", "1", "--data.init_args.num_samples", "1024", "--data.init_args.batch_size", "256"]
    fit += ["--output_dir", str(tmp_path)]
    seeds = ["1", "2", "3"]
    started = [
        subprocess.Popen([*fit, "--seed_everything", seed], cwd=REPO, stderr=subprocess.PIPE, text=True, env=os.environ)
        for seed in seeds
    ]
    for process in started:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    folders = sorted((tmp_path / "moons").iterdir())
    assert [folder.name for folder in folders] == ["version_0", "version_1", "version_2"]
    found = set()
    for folder in folders:
        assert fit_finished(folder) is True
        assert load(folder / "checkpoints" / "last.ckpt")["global_step"] == 4  # 1024 samples in batches of 256
        found.add(next(line for line in (folder / "config.yaml").read_text().splitlines() if "seed_everything" in line))
    assert found == {f"seed_everything: {seed}" for seed in seeds}  # each folder is one run's
