"""The sample metrics' own sampler (model/metric_sampler.py): val_sampler, val_num_inference_steps and
val_sampler_kwargs reach the metrics' samples only; the plots keep the model's sampler."""

import pytest
from helpers.tiny_fit import make_module

from lightning_diffusion import DiffusionModule


def test_the_sample_metrics_use_val_sampler_and_its_steps_and_the_plots_the_models(tmp_path, monkeypatch):
    import lightning as L

    from lightning_diffusion.callbacks import SamplePlot, TrajectoryPlot
    from lightning_diffusion.data import Toy2DDataModule

    calls = []  # (points, sampler, steps) of every sample() call
    sample = DiffusionModule.sample
    monkeypatch.setattr(
        DiffusionModule,
        "sample",
        lambda self, n, *a, **kw: (
            calls.append((n, kw.get("sampler"), kw.get("num_inference_steps"))) or sample(self, n, *a, **kw)
        ),
    )
    model = make_module(
        num_inference_steps=7, val_num_samples=40, val_sampler="DDIMScheduler", val_num_inference_steps=3
    )
    plots = [SamplePlot(num_samples=16), TrajectoryPlot(num_points=16, timestep_stride=500)]
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, callbacks=plots)  # fmt: skip
    trainer.fit(model, Toy2DDataModule(num_samples=64, num_val_samples=80, batch_size=64))
    assert (40, "DDIMScheduler", 3) in calls  # the metrics: 40 points, the val sampler
    assert sorted(calls) == [(16, None, None), (16, None, None), (40, "DDIMScheduler", 3)]  # the plots: the model's
    assert len(list((tmp_path / "plots").glob("*.png"))) == 2


def test_val_sampler_options_are_range_checked_naming_themselves():
    with pytest.raises(ValueError, match="val_num_inference_steps must be at least 1"):
        make_module(val_num_inference_steps=0)
    with pytest.raises(ValueError, match="val_sampler='nope'"):
        make_module(val_sampler="nope")
    assert make_module(num_inference_steps=5, val_num_inference_steps=5).val_sampling == {}  # the model's: shared


def test_val_sampler_kwargs_reach_the_metrics_sampler_only():
    """val_sampler_kwargs configure the metrics' sampler (e.g. a stochastic few-step one); without them a different
    sampler runs with its defaults and the model's own sampler keeps its sampler_kwargs."""
    sde = {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}
    model = make_module(val_sampler="DPMSolverMultistepScheduler", val_num_inference_steps=4, val_sampler_kwargs=sde)
    assert model.val_sampling == {"sampler": "DPMSolverMultistepScheduler", "num_inference_steps": 4,
                                  "sampler_kwargs": sde}  # fmt: skip
    own = {"timestep_spacing": "trailing"}
    assert (
        make_module(sampler="DDIMScheduler", sampler_kwargs=own, val_sampler="DDPMScheduler").val_sampling[
            "sampler_kwargs"
        ]
        == {}
    )
    assert make_module(sampler="DDIMScheduler", sampler_kwargs=own, val_sampler_kwargs=own).val_sampling == {}
    assert (
        make_module(sampler="DDIMScheduler", sampler_kwargs=own, val_sampler_kwargs={}).val_sampling["sampler_kwargs"]
        == {}
    )
    with pytest.raises(ValueError, match="val_sampler_kwargs=.*algorithm_type"):
        make_module(val_sampler="DPMSolverMultistepScheduler", val_sampler_kwargs={"algorithm_type": "nope"})


def test_a_sampler_that_cannot_step_its_schedule_is_one_sentence_before_training():
    """SDE-DPM-Solver++ with Karras sigmas over a cosine schedule repeats timesteps (46 distinct of 100) and
    diffusers' step then indexes past its sigmas (IndexError): found when the first validation of a full fit
    crashed. The module refuses it when built, as the model's sampler and as the metrics' own."""
    from diffusers import DDPMScheduler

    cosine = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    karras = {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}
    sampler = {"sampler": "DPMSolverMultistepScheduler", "num_inference_steps": 100, "sampler_kwargs": karras}
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler cannot take 100 steps over this schedule"):
        make_module(**sampler | {"scheduler": cosine})
    metric = {"val_sampler": "DPMSolverMultistepScheduler", "val_num_inference_steps": 100}
    with pytest.raises(ValueError, match="val_sampler='DPMSolverMultistepScheduler'.*cannot take 100 steps"):
        make_module(**metric | {"val_sampler_kwargs": karras, "scheduler": cosine})
    make_module(**sampler)  # the same sampler over the linear schedule steps
