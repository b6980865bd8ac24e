"""Multi-GPU trust, proven on CPU: per-rank random streams, no host syncs in the training step outside the logging
interval, a sync-free EMA, and the defects that no GPU run would report (issue 14)."""

import os
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import REPO
from diffusers import DDPMScheduler
from lightning.pytorch.callbacks import TQDMProgressBar
from syncs import SyncCounter

from lightning_diffusion import DiffusionModule
from lightning_diffusion.callbacks import EMA, LossProgressBar, SamplePlot, TrajectoryPlot
from lightning_diffusion.callbacks.artifacts import should_run
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser

SCHEDULER = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


def tiny_fit(callbacks, max_epochs=1, log_every_n_steps=10, num_batches=40, **module_kwargs):
    L.seed_everything(0)
    data = Toy2DDataModule(num_samples=64 * num_batches, num_val_samples=128, batch_size=64)
    model = DiffusionModule(
        denoiser=MLPDenoiser(),
        scheduler=SCHEDULER,
        sample_shape=(2,),
        num_inference_steps=10,
        prediction_type="v_prediction",
        **module_kwargs,
    )
    trainer = L.Trainer(
        max_epochs=max_epochs,
        log_every_n_steps=log_every_n_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    return trainer, model


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


def test_ema_is_one_fused_update_without_host_syncs_and_the_warmed_up_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(decay=0.9)
    module = L.LightningModule()
    module.net = model
    ema.setup(SimpleNamespace(), module, "fit")
    expected = [p.detach().clone() for p in module.parameters()]
    syncs = []
    original = torch.Tensor.item, torch.Tensor.__bool__
    torch.Tensor.item = lambda self: syncs.append("item") or original[0](self)
    torch.Tensor.__bool__ = lambda self: syncs.append("bool") or original[1](self)
    try:
        for n in range(6):
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(torch.randn_like(p))
            ema.on_train_batch_end(SimpleNamespace(global_step=n + 1), module, None, None, n)
            current = [p.detach() for p in module.parameters()]
            d = min(0.9, (1 + n) / (10 + n))  # the warmed-up decay of the n-th update
            expected = [c.clone() if n == 0 else d * e + (1 - d) * c for e, c in zip(expected, current, strict=False)]
    finally:
        torch.Tensor.item, torch.Tensor.__bool__ = original
    assert syncs == []
    averaged = list(ema.average.module.parameters())
    for a, e in zip(averaged, expected, strict=False):
        assert torch.allclose(a, e, atol=1e-6)
    assert ema.num_updates == 6 and int(ema.average.n_averaged) == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_ema_on_the_cpu_of_a_model_on_the_gpu_averages_the_weights_of_the_step():
    """EMA(device="cpu") of a model on the GPU reads the weights once the step has written them: a copy to the host
    that does not wait (non_blocking) would hand the average a buffer the GPU is still filling."""
    module = L.LightningModule()
    module.net = torch.nn.Linear(2048, 2048)
    module.cuda()
    ema = EMA(decay=0.9, device="cpu")
    ema.setup(SimpleNamespace(), module, "fit")
    start = [p.detach().double().cpu() for p in module.parameters()]
    busy = torch.randn(4096, 4096, device="cuda")
    for n in range(3):
        for _ in range(20):  # keep the GPU busy, so that the step's writes land late
            busy = busy @ busy / 4096
        with torch.no_grad():
            for p in module.parameters():
                p.add_(1.0)
        ema.on_train_batch_end(SimpleNamespace(global_step=n + 1), module, None, None, n)
    a = [s + 1 for s in start]  # the first update copies, then d = 2/11 and 3/12
    a = [2 / 11 * x + 9 / 11 * (s + 2) for x, s in zip(a, start, strict=True)]
    a = [3 / 12 * x + 9 / 12 * (s + 3) for x, s in zip(a, start, strict=True)]
    for averaged, expected in zip(ema.average.module.parameters(), a, strict=True):
        assert averaged.device.type == "cpu"
        assert torch.allclose(averaged.double(), expected, atol=1e-5)


def test_ema_options_and_validation_before_the_first_update():
    """Until update_starting_at_step, validation and checkpoints use the training weights (not the raw initial
    weights as if they were the average); updates then come every update_every_n_steps; the average can live on
    the CPU."""
    _, plain = tiny_fit([], max_epochs=2, num_batches=8)
    late = EMA(decay=0.9, update_starting_at_step=1000, device="cpu")
    trainer, model = tiny_fit([late], max_epochs=2, num_batches=8)
    assert torch.equal(trainer.callback_metrics["val/loss"], plain.trainer.callback_metrics["val/loss"])
    assert late.num_updates == 0
    for a, b in zip(
        model.parameters(), plain.parameters(), strict=False
    ):  # the trained weights were not replaced at the end
        assert torch.equal(a, b)
    every = EMA(decay=0.9, update_every_n_steps=3, update_starting_at_step=4, device="cpu")
    tiny_fit([every], max_epochs=2, num_batches=8)
    assert every.num_updates == len([s for s in range(16) if s >= 4 and s % 3 == 0])
    assert next(every.average.parameters()).device.type == "cpu"


def test_ema_says_once_that_validation_uses_the_training_weights_and_not_at_the_sanity_check(caplog):
    """Said at the first real validation before the first update, once; the sanity check (no metrics, before any
    step, so before any update) says nothing."""
    import logging

    import lightning_utilities.core.rank_zero as rank_zero

    rank_zero.log.addHandler(caplog.handler)  # rank_zero_info's logger does not propagate to the root
    caplog.set_level(logging.INFO)
    try:
        for ema, said in [(EMA(decay=0.9), 0), (EMA(decay=0.9, update_starting_at_step=1000), 1)]:
            caplog.clear()
            L.seed_everything(0)
            data = Toy2DDataModule(num_samples=64 * 4, num_val_samples=128, batch_size=64)
            model = DiffusionModule(
                denoiser=MLPDenoiser(),
                scheduler=SCHEDULER,
                sample_shape=(2,),
                num_inference_steps=2,
                val_num_samples=16,
            )
            trainer = L.Trainer(
                max_epochs=2,
                callbacks=[ema],
                logger=False,
                enable_progress_bar=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                num_sanity_val_steps=1,
            )
            trainer.fit(model, data)
            # the same record may reach caplog's handler twice (directly and through the root): count records once
            told = {id(r) for r in caplog.records if "EMA: no update yet" in r.getMessage()}
            assert len(told) == said, caplog.text
    finally:
        rank_zero.log.removeHandler(caplog.handler)


def plotted_fit(tmp_path, val_num_samples, trajectory=True):
    """Two epochs of moons, validated after each, with the EMA and both plots of configs/moons.yaml (100 points each);
    returns the module and its sample() calls during validation."""
    L.seed_everything(0)
    data = Toy2DDataModule(num_samples=64 * 8, num_val_samples=256, batch_size=64)
    model = DiffusionModule(
        denoiser=MLPDenoiser(),
        scheduler=SCHEDULER,
        sample_shape=(2,),
        num_inference_steps=10,
        prediction_type="v_prediction",
        val_num_samples=val_num_samples,
    )
    calls, sample = [], model.sample
    model.sample = lambda *args, **kwargs: (
        calls.append(args[0] if args else kwargs["num_samples"]) or sample(*args, **kwargs)
    )
    plots = [SamplePlot(every_n_epochs=1, num_samples=100)] + (
        [TrajectoryPlot(every_n_epochs=2, num_points=100)] if trajectory else []
    )
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[EMA(decay=0.9), *plots],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data)
    return model, calls, trainer


def test_plots_draw_the_samples_of_the_metrics_without_sampling_again(tmp_path):
    """With sample metrics, the sample plot and the trajectory show the samples the metrics generated (one sampling
    call per validation, where there were three), which keeping their steps does not change; without, they sample."""
    model, calls, trainer = plotted_fit(tmp_path / "reused", val_num_samples=100)
    assert calls == [100, 100]  # the metrics' own, one per validation: no sampling for the plots
    plots = {p.name for p in (tmp_path / "reused" / "plots").iterdir()}
    assert plots == {"samples_epoch=0000.png", "samples_epoch=0001.png", "trajectory_epoch=0001.png"}
    record = model.validation_samples
    assert record.samples.shape == (100, 2) and record.noise.shape == (100, 2)
    assert len(record.steps) == 10 and record.steps[0][1].shape == (100, 2)  # kept for the trajectory
    unobserved, _, plain = plotted_fit(tmp_path / "unobserved", val_num_samples=100, trajectory=False)
    assert (
        torch.equal(record.samples, unobserved.validation_samples.samples) and not unobserved.validation_samples.steps
    )
    assert trainer.callback_metrics["val/swd"] == plain.callback_metrics["val/swd"]
    _, calls, _ = plotted_fit(tmp_path / "own", val_num_samples=0)
    assert calls == [100, 100, 100]  # two sample plots and the trajectory, each its own points
    assert len(list((tmp_path / "own" / "plots").iterdir())) == 3


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


def test_plots_respect_every_n_epochs_in_runs_bounded_by_steps():
    def trainer(epoch, max_epochs):
        return SimpleNamespace(
            sanity_checking=False, is_global_zero=True, current_epoch=epoch, max_epochs=max_epochs, fast_dev_run=False
        )

    assert [should_run(trainer(e, -1), 5) for e in range(10)] == [e % 5 == 4 for e in range(10)]
    assert should_run(trainer(6, 7), 5)  # the last epoch of an epoch-bounded run always draws


@pytest.mark.slow
def test_ddp_ranks_draw_their_own_noise_and_resume_exactly(tmp_path):
    """Two CPU ranks (gloo): the global random state differs between the ranks at every step (each rank its own
    timesteps, noise and label dropout), and 2 + 2 epochs under DDP equal 4 straight epochs."""
    args = [
        "--config",
        str(REPO / "configs/moons.yaml"),
        "--data.init_args.num_samples",
        "1024",
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
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    straight = load(tmp_path / "outputs/straight/version_0/checkpoints/last.ckpt")
    resumed = load(tmp_path / "outputs/resumed/version_1/checkpoints/last.ckpt")
    assert straight["global_step"] == resumed["global_step"]
    for key in ("state_dict", "current_model_state"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
