"""StreamingImageDataModule in training: under 2-process DDP (gloo) one epoch shows every training sample once
across the ranks, validation runs, a run stopped by SIGTERM in the middle of an epoch resumes bit for bit (one
process, and DDP with the signal on one rank), and a streaming epoch's peak memory does not grow with the set."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from helpers.checkpoints import load
from helpers.streaming import numbered_shards, numbers
from lightning.pytorch.callbacks import Callback
from streaming_scale import EPOCH, Generated
from test_ddp_partition import assert_partitioned, fit_ddp

import lightning_diffusion.callbacks as callbacks
from lightning_diffusion.tools.prepare import prepare

pytestmark = pytest.mark.slow

CONFIG = str(REPO / "configs" / "streaming.yaml")


def small(shards, *extra):
    """configs/streaming.yaml on the CPU in seconds: the numbered shards, fp32, batches of 8, a UNet 32 wide."""
    return [
        "--config",
        CONFIG,
        "--data.init_args.shards",
        str(shards),
        "--data.init_args.cache_dir",
        "null",
        "--trainer.accelerator",
        "cpu",
        "--trainer.precision",
        "32-true",
        "--data.init_args.pin_memory",
        "false",
        "--data.init_args.batch_size",
        "8",
        "--data.init_args.random_flip",
        "false",  # the first pixel names the image
        "--model.denoiser.init_args.block_out_channels",
        "[32, 32, 32, 32]",
        "--model.num_inference_steps",
        "2",
        "--trainer.log_every_n_steps",
        "1",  # the ranks agree on a stop at logging steps: here after every batch
        *extra,
    ]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return numbered_shards(tmp_path_factory.mktemp("shards"), n=72, num_val_samples=8)  # 64 train, 8 val


def test_ddp_epoch_shows_every_sample_once(tmp_path, shards):
    extra = small(shards, "--data.init_args.num_workers", "0", "--trainer.max_epochs", "2")[2:]
    seen = fit_ddp(tmp_path, "streaming.yaml", *extra)
    for epoch in (0, 1):
        ids = [numbers(seen[rank, epoch]) for rank in (0, 1)]
        assert_partitioned(ids, per_rank=32, batch_size=8)
        assert sorted(ids[0] + ids[1]) == [n for n in range(72) if n in set(ids[0] + ids[1])]
        assert len(set(ids[0] + ids[1])) == 64  # all of the training split: 64 = 2 ranks x 4 batches of 8
    assert numbers(seen[0, 0]) != numbers(seen[0, 1]), "the second epoch repeated the first one's order"


def sigterm_before_step(step):
    class SigtermBeforeStep(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == step:
                os.kill(os.getpid(), signal.SIGTERM)

    return SigtermBeforeStep


def assert_same_weights(a, b):
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for key in ("state_dict", "current_model_state"):  # EMA weights, training weights
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_epoch_resumes_bit_for_bit(run_cli, tmp_path, shards, monkeypatch, workers):
    """8 batches an epoch; the stop comes after batch 3 of the first epoch, the loader's state in the checkpoint."""
    monkeypatch.setattr(callbacks, "SigtermBeforeStep", sigterm_before_step(3), raising=False)
    args = small(shards, "--data.init_args.num_workers", str(workers), "--trainer.max_epochs", "2")
    straight = run_cli("fit", *args, "--experiment", "straight")
    assert "val/loss" in straight.trainer.callback_metrics  # validation ran
    with pytest.raises(SystemExit, match="143"):
        run_cli(
            "fit",
            *args,
            "--experiment",
            "resumed",
            "--trainer.callbacks+=lightning_diffusion.callbacks.SigtermBeforeStep",
        )
    interrupted = load(tmp_path / "outputs/resumed/version_0/checkpoints/interrupted.ckpt")
    assert interrupted["global_step"] == 4
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the StreamingDataLoader's state
    run_cli("fit", *args, "--experiment", "resumed", "--ckpt_path", "last")
    assert_same_weights(
        load(tmp_path / "outputs/straight/version_0/checkpoints/last.ckpt"),
        load(tmp_path / "outputs/resumed/version_1/checkpoints/last.ckpt"),
    )


def fit_ddp_run(tmp_path, experiment, *args):
    """The real CLI on 2 CPU ranks (gloo) in a subprocess; returns its exit code and the end of its stderr."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.enable_progress_bar", "false"]
    command = [sys.executable, "-m", "lightning_diffusion", "fit", *args, *ddp, "--experiment", experiment]
    command += ["--output_dir", str(tmp_path / "outputs")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return result.returncode, result.stderr[-3000:]


def test_ddp_sigterm_mid_epoch_resumes_bit_for_bit(tmp_path, shards):
    """4 batches an epoch per rank; SIGTERM reaches rank 1 before step 1, both ranks stop after batch 2 of the first
    epoch, and the resumed run reads the other half of that epoch's batches: the straight run's weights."""
    args = small(shards, "--data.init_args.num_workers", "0", "--trainer.max_epochs", "2")
    code, stderr = fit_ddp_run(tmp_path, "straight", *args)
    assert code == 0, stderr
    stop = ["--trainer.callbacks+=helpers.streaming.SigtermOnRank", "--trainer.callbacks.step", "1"]
    code, stderr = fit_ddp_run(tmp_path, "resumed", *args, *stop)
    assert code == 143, stderr
    interrupted = load(tmp_path / "outputs/resumed/version_0/checkpoints/interrupted.ckpt")
    assert interrupted["global_step"] == 2 and interrupted["epoch"] == 0
    code, stderr = fit_ddp_run(tmp_path, "resumed", *args, "--ckpt_path", "last")
    assert code == 0, stderr
    assert_same_weights(
        load(tmp_path / "outputs/straight/version_0/checkpoints/last.ckpt"),
        load(tmp_path / "outputs/resumed/version_1/checkpoints/last.ckpt"),
    )


# The peak of this process's own memory: /proc's VmHWM, reset by exec (getrusage's ru_maxrss is not: a child keeps the
# peak of the process it was forked from, here pytest's, which held the generated set).
def test_peak_memory_of_an_epoch_does_not_grow_with_the_set(tmp_path):
    """The same epoch over 1,000 and 10,000 64x64 RGB images (12 MB and 123 MB of pixels) in chunks of 4 MB: peak
    RSS within 10% (litdata holds a few chunks, not the set)."""
    peaks = {}
    for n in (1_000, 10_000):
        shards = prepare(Generated(n), tmp_path / str(n), workers=2, chunk_bytes="4MB")
        result = subprocess.run([sys.executable, "-c", EPOCH, str(shards)], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr[-2000:]
        count, _, peak = result.stdout.split()  # images, seconds, peak RSS (kB): benchmarks/streaming_scale.py
        count, peak = int(count), int(peak)
        assert count == n // 64 * 64
        peaks[n] = peak
    growth = peaks[10_000] / peaks[1_000] - 1
    assert growth < 0.10, f"peak RSS {peaks} (kB) grew {growth:.0%} for a 10x set"
