"""Multi-GPU trust for the validation plots: the sample plot and the trajectory draw the samples the metrics
generated (one sampling call per validation), and they keep to every_n_epochs in runs bounded by steps (issue 14)."""

from types import SimpleNamespace

import lightning as L
import torch
from helpers.tiny_fit import SCHEDULER

from lightning_diffusion import DiffusionModule
from lightning_diffusion.callbacks import EMA, SamplePlot, TrajectoryPlot
from lightning_diffusion.callbacks.artifacts import should_run
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser


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


def test_plots_respect_every_n_epochs_in_runs_bounded_by_steps():
    def trainer(epoch, max_epochs):
        return SimpleNamespace(
            sanity_checking=False, is_global_zero=True, current_epoch=epoch, max_epochs=max_epochs, fast_dev_run=False
        )

    assert [should_run(trainer(e, -1), 5) for e in range(10)] == [e % 5 == 4 for e in range(10)]
    assert should_run(trainer(6, 7), 5)  # the last epoch of an epoch-bounded run always draws
