"""Every option that takes a count, a size, a probability, a rate or a weight is range-checked where it is built: a
value outside its range is one sentence that names that option (errors/ranges.py), before any work; the list with the
ranges is notes/reliability.md. Through the CLI the sentence is the one line the user reads."""

import pytest
from diffusers import DDPMScheduler

from lightning_diffusion import DiffusionModule
from lightning_diffusion import callbacks as C
from lightning_diffusion import data as D
from lightning_diffusion.cli import main
from lightning_diffusion.denoisers import DiTDenoiser, MLPDenoiser, UNetDenoiser
from lightning_diffusion.errors import check_range
from lightning_diffusion.formulations import EDM, VP, FlowMatching


def module(**options):
    return DiffusionModule(denoiser=MLPDenoiser(), scheduler=DDPMScheduler(), **options)


def vp(**options):
    return VP(DDPMScheduler(), **options)


# (what builds it, the option, a value outside its range): each was accepted, or refused naming another option
OUT_OF_RANGE = [
    (module, "num_inference_steps", 0),  # was recorded in config.yaml while sampling used the default 1000 steps
    (module, "guidance_scale", -1.0),
    (module, "val_num_samples", -1),
    (module, "sample_seed", -1),
    (module, "val_num_inference_steps", 0),
    (vp, "min_snr_gamma", 0.0),
    (EDM, "P_std", 0.0),
    (EDM, "rho", -1.0),
    (FlowMatching, "logit_std", 0.0),
    (MLPDenoiser, "hidden_dim", 0),
    (MLPDenoiser, "num_blocks", 0),
    (MLPDenoiser, "time_embed_dim", 1),
    (MLPDenoiser, "dropout", 1.0),
    (MLPDenoiser, "num_classes", 0),
    (UNetDenoiser, "block_out_channels", (32, 0)),
    (UNetDenoiser, "layers_per_block", 0),
    (UNetDenoiser, "attention_head_dim", 0),  # was a ZeroDivisionError
    (UNetDenoiser, "norm_num_groups", 0),  # was a ZeroDivisionError
    (UNetDenoiser, "dropout", -0.1),
    (DiTDenoiser, "num_classes", 0),
    (C.EMA, "update_starting_at_step", -1),
    (C.SampleGrid, "every_n_epochs", 0),
    (C.SampleGrid, "samples_per_row", 0),
    (C.SampleGrid, "num_rows", 0),
    (C.SampleGrid, "progression_images", -1),
    (C.SamplePlot, "every_n_epochs", 0),
    (C.SamplePlot, "num_samples", 0),
    (C.SampleWriter, "grid_size", -1),
    (C.TrajectoryPlot, "every_n_epochs", 0),
    (C.TrajectoryPlot, "num_points", 0),
    (C.TrajectoryPlot, "timestep_stride", 0),
    (C.TrajectoryPlot, "tracked_index", 1000),  # one of the 1000 points: 0 to 999
    (C.LossProgressBar, "refresh_rate", -1),
    (C.LossProgressBar, "min_interval", -1.0),
    (C.LostRank, "timeout", 0.0),
    (D.Toy2DDataModule, "batch_size", 0),
    (D.Toy2DDataModule, "num_workers", -1),
    (D.Toy2DDataModule, "predict_num_samples", -1),
]


@pytest.mark.parametrize(("build", "option", "value"), OUT_OF_RANGE, ids=lambda x: getattr(x, "__name__", str(x)))
def test_a_value_out_of_range_is_one_sentence_naming_its_option(build, option, value):
    with pytest.raises(ValueError) as raised:
        build(**{option: value})
    message = str(raised.value)
    assert option in message and "\n" not in message, message
    assert message.endswith("."), message


def test_the_range_sentence():
    check_range("EMA", "decay", 0.5, 0, 1, high_open=True)  # in range: nothing
    check_range("EMA", "decay", None, 0, 1)  # not given: nothing
    cases = [
        (dict(value=1.0, low=0, high=1, high_open=True), "EMA decay must be in [0, 1), got 1.0."),
        (dict(value=0, low=1), "EMA decay must be at least 1, got 0."),
        (dict(value=0.0, low=0, low_open=True), "EMA decay must be greater than 0, got 0.0."),
        (dict(value=float("nan"), low=0), "EMA decay must be at least 0, got nan."),
        (dict(value=3, high=2), "EMA decay must be at most 2, got 3."),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ValueError) as raised:
            check_range("EMA", "decay", **kwargs)
        assert str(raised.value) == expected


def test_through_the_cli_the_sentence_is_the_one_line(tmp_path, capsys):
    fit = ["fit", "--config", "configs/moons.yaml", "--output_dir", str(tmp_path), "--trainer.fast_dev_run", "true"]
    for option, value, expected in [
        ("--model.num_inference_steps", "0", "error: num_inference_steps must be in [1, 1000], got 0."),
        ("--model.denoiser.init_args.hidden_dim", "0", "error: MLPDenoiser hidden_dim must be at least 1, got 0."),
    ]:
        with pytest.raises(SystemExit) as exited:
            main([*fit, option, value])
        assert exited.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1] == expected, lines[-3:]
    assert not any(tmp_path.iterdir())  # before any work: no run folder
