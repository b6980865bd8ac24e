"""Autoguidance and the guidance interval through the real CLI: `--model.guide <checkpoint>` and
`--model.guidance_interval [lo, hi]` in predict; a guide equal to the model changes nothing at any scale, and a guide
of other data or another formulation is one sentence before any work."""

import numpy as np
import pytest
from conftest import REPO

MOONS = str(REPO / "configs" / "moons.yaml")
TINY = [
    "--data.init_args.num_samples",
    "512",
    "--data.init_args.batch_size",
    "256",
    "--data.init_args.num_val_samples",
    "256",
    "--model.val_num_samples",
    "0",
    "--trainer.callbacks",
    "[]",
    "--trainer.enable_progress_bar",
    "false",
]
PREDICT = ["--data.init_args.predict_num_samples", "64", "--model.sampler", "ddim", "--model.num_inference_steps", "8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """last.ckpt of four tiny moons runs: the model (8 steps), a weaker one (1 step), an EDM one, a conditional one."""
    from lightning_diffusion.cli import main

    root = tmp_path_factory.mktemp("autoguidance")
    variants = {
        "model": (MOONS, "8", []),
        "weak": (MOONS, "1", []),
        "edm": (str(REPO / "configs" / "moons_edm.yaml"), "1", []),
        "conditional": (MOONS, "1", ["--data.init_args.labels", "true", "--model.label_dropout", "0.1"]),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lightning_diffusion"])
        for name, (config, steps, extra) in variants.items():
            out = root / name
            main(["fit", "--config", config, *TINY, "--trainer.max_steps", steps, *extra, "--output_dir", str(out)])
    return {name: next((root / name).rglob("last.ckpt")) for name in variants}


def predict(run_cli, tmp_path, runs, *options: str) -> np.ndarray:
    """The samples of the model's predict with `options` (each predict writes the next run folder)."""
    before = set(tmp_path.rglob("samples.npz"))
    cli = run_cli("predict", "--config", MOONS, "--ckpt_path", str(runs["model"]), *PREDICT, *options)
    given = dict(zip(options[::2], options[1::2], strict=True))
    assert cli.model.hparams.guide == given.get("--model.guide")  # the command line's, not the checkpoint's
    (written,) = set(tmp_path.rglob("samples.npz")) - before
    return np.load(written)["samples"]


def test_a_guide_equal_to_the_model_changes_nothing_at_any_scale(run_cli, tmp_path, runs):
    alone = predict(run_cli, tmp_path, runs)
    for w in ("0", "3"):
        guided = predict(run_cli, tmp_path, runs, "--model.guide", str(runs["model"]), "--model.guidance_scale", w)
        assert np.array_equal(guided, alone)


def test_a_weaker_guide_and_an_interval_change_the_samples(run_cli, tmp_path, runs):
    alone = predict(run_cli, tmp_path, runs)
    guide = ["--model.guide", str(runs["weak"]), "--model.guidance_scale", "2"]
    guided = predict(run_cli, tmp_path, runs, *guide)
    limited = predict(run_cli, tmp_path, runs, *guide, "--model.guidance_interval", "[0.5, 5.0]")
    nowhere = predict(run_cli, tmp_path, runs, *guide, "--model.guidance_interval", "[1000, 2000]")
    assert np.isfinite(guided).all() and np.isfinite(limited).all()
    assert not np.allclose(guided, alone, atol=1e-3) and not np.allclose(limited, guided, atol=1e-3)
    assert not np.allclose(limited, alone, atol=1e-3) and np.array_equal(nowhere, alone)


@pytest.mark.parametrize(
    "guide,words",
    [
        ("edm", "its formulation is EDM, the model's VP"),
        ("conditional", "its num_classes is 2, the model's None"),
    ],
)
@pytest.mark.parametrize("command", ["predict", pytest.param("fit", marks=pytest.mark.slow)])
def test_a_guide_that_does_not_fit_is_one_sentence_before_any_work(
    run_cli, tmp_path, capsys, runs, guide, words, command
):
    args = (
        [*PREDICT, "--ckpt_path", str(runs["model"])] if command == "predict" else [*TINY, "--trainer.max_steps", "1"]
    )
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command, "--config", MOONS, *args, "--model.guide", str(runs[guide]), "--model.guidance_scale", "2")
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot guide this model" in lines[0] and words in lines[0], err[-2000:]
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("samples.npz"))


def test_a_guide_that_names_no_checkpoint_is_one_sentence(run_cli, tmp_path, capsys, runs):
    missing = tmp_path / "nothing_here"
    with pytest.raises(SystemExit):
        run_cli(
            "predict", "--config", MOONS, "--ckpt_path", str(runs["model"]), *PREDICT, "--model.guide", str(missing)
        )
    assert f"error: guide {missing} names no checkpoint" in capsys.readouterr().err
