import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

os.environ.setdefault("WANDB_MODE", "offline")  # never a login prompt in tests


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """The CLI is driven through main(args); pytest's own arguments are not the CLI's."""
    monkeypatch.setattr("sys.argv", ["lightning_diffusion"])


@pytest.fixture
def run_cli(tmp_path):
    """Runs the real CLI in-process with outputs under tmp_path; returns the DiffusionCLI."""
    from lightning_diffusion.cli import main

    def run(*args: str):
        return main([*args, "--output_dir", str(tmp_path / "outputs"), "--trainer.enable_progress_bar", "false"])

    return run
