"""Multi-GPU trust, proven on CPU: no host syncs in the training step outside the logging interval (also with the
loss in the progress bar), per-rank random streams that resume exactly under DDP, and the defects that no GPU run
would report (issue 14). The EMA's part: test_multi_gpu_ema.py; the plots': test_multi_gpu_plots.py."""

import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from conftest import REPO
from diffusers import DDPMScheduler
from helpers.checkpoints import load
from helpers.tiny_fit import SCHEDULER, tiny_fit
from lightning.pytorch.callbacks import TQDMProgressBar
from syncs import SyncCounter

from lightning_diffusion import DiffusionModule
from lightning_diffusion.callbacks import EMA, LossProgressBar
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser


def test_the_training_step_syncs_the_host_only_at_logging_steps():
    """40 steps, logging every 10: no host sync in the 36 other steps (before: 91 per step, one `.item()` per
    parameter in the EMA, one for the non-finite check); at a logging step, ours (the loss read with the
    non-finite check) and Lightning's own conversion of the logged value."""
    counter = SyncCounter()
    trainer, _ = tiny_fit([counter, EMA(decay=0.99)])
    counts = counter.training_counts(40)
    logging = {9, 19, 29, 39}
    assert all(counts[i] == 0 for i in range(40) if i not in logging), (counts, counter.sites)
    assert all(counts[i] <= 2 for i in logging), (counts, counter.sites)


def test_the_progress_bar_shows_the_loss_and_redraws_at_its_pace(monkeypatch):
    """The bar shows the loss the module read at its last logging step, without a sync; it redraws at most every
    min_interval seconds and at each epoch's last batch, where Lightning's redraws after every batch."""
    draws = []
    drawn = TQDMProgressBar.on_train_batch_end
    monkeypatch.setattr(TQDMProgressBar, "on_train_batch_end", lambda self, *a: draws.append(a[-1]) or drawn(self, *a))

    def fit(*callbacks):
        L.seed_everything(0)
        model = DiffusionModule(denoiser=MLPDenoiser(), scheduler=SCHEDULER, sample_shape=(2,))
        trainer = L.Trainer(
            max_epochs=2,
            callbacks=list(callbacks),
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            limit_val_batches=0,
            log_every_n_steps=4,
        )
        trainer.fit(model, Toy2DDataModule(num_samples=64 * 8, num_val_samples=64, batch_size=64))
        return trainer, model

    bar = LossProgressBar(min_interval=3600)
    trainer, model = fit(bar)
    assert draws == [0, 7, 7]  # the first batch, then each epoch's last
    assert bar.get_metrics(trainer, model)["train/loss"] == f"{model.last_train_loss:.4g}"
    draws.clear()
    counter = SyncCounter()
    fit(counter, LossProgressBar(min_interval=0))
    assert draws == list(range(8)) * 2  # after every batch, as Lightning's
    counts = counter.training_counts(16)  # and without a sync outside the logging steps (every 4) and epoch ends
    assert all(counts[i] == 0 for i in range(16) if i not in (3, 7, 11, 15)), (counts, counter.sites)


def test_zero_terminal_snr_with_epsilon_prediction_is_refused():
    zero_snr = DDPMScheduler(rescale_betas_zero_snr=True, clip_sample=False)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        DiffusionModule(denoiser=MLPDenoiser(), scheduler=zero_snr, prediction_type="epsilon")
    DiffusionModule(denoiser=MLPDenoiser(), scheduler=zero_snr, prediction_type="v_prediction")


def test_sample_metrics_need_twice_val_num_samples_held_out():
    """256 held-out points cannot give 200 compared and 200 for the floor: refused before training, instead of
    computing the metrics on 128 while the record says 200."""
    with pytest.raises(
        ValueError,
        match=r"val_num_samples=200 needs 400 held-out samples .* the validate set has 128|"
        r"val_num_samples=200 needs 400 held-out samples .* has 128",
    ):
        tiny_fit([], val_num_samples=200)


@pytest.mark.slow
def test_ddp_ranks_draw_their_own_noise_and_resume_exactly(tmp_path):
    """Two CPU ranks (gloo): the global random state differs between the ranks at every step (each rank its own
    timesteps, noise and label dropout), and 2 + 2 epochs under DDP equal 4 straight epochs."""
    args = [
        "--config",
        str(REPO / "configs/moons.yaml"),
        "--data.init_args.num_samples",
        "1024",
        "--data.init_args.batch_size",
        "256",
        "--data.init_args.num_val_samples",
        "256",
        "--model.val_num_samples",
        "64",
        "--model.num_inference_steps",
        "10",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--output_dir",
        str(tmp_path / "outputs"),
        "--trainer.callbacks+=helpers.rng_record.RecordRngState",
        f"--trainer.callbacks.folder={tmp_path / 'rng'}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}

    def fit(*extra):
        result = subprocess.run(
            [sys.executable, "-m", "lightning_diffusion", "fit", *args, *extra],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]

    fit("--trainer.max_epochs", "4", "--experiment", "straight")
    ranks = [(tmp_path / "rng" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 * 1024 // 256 // 2
    assert all(a != b for a, b in zip(*ranks, strict=False)), "the ranks drew the same random stream"
    fit("--trainer.max_epochs", "2", "--experiment", "resumed")
    fit("--trainer.max_epochs", "4", "--experiment", "resumed", "--ckpt_path", "last")
    straight = load(tmp_path / "outputs/straight/version_0/checkpoints/last.ckpt")
    resumed = load(tmp_path / "outputs/resumed/version_1/checkpoints/last.ckpt")
    assert straight["global_step"] == resumed["global_step"]
    for key in ("state_dict", "current_model_state"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
