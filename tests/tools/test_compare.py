"""`python -m lightning_diffusion compare`: two tiny moons runs side by side, written as a report with its plots; and
the one command's top level and the tools' bad command lines."""

import re

import pytest
from conftest import REPO
from PIL import Image

from lightning_diffusion.__main__ import main as command
from lightning_diffusion.tools.compare import config_differences, main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two epochs of configs/moons.yaml on 1,024 points, once as configured (v-prediction) and once with eps."""
    from lightning_diffusion.cli import main as cli

    out = tmp_path_factory.mktemp("compare_runs")
    tiny = [
        "fit",
        "--config",
        str(REPO / "configs/moons.yaml"),
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--model.lr_scheduler.init_args.T_max",
        "2",
        "--data.init_args.num_samples",
        "1024",
        "--data.init_args.num_val_samples",
        "256",
        "--model.val_num_samples",
        "64",
        "--model.num_inference_steps",
        "10",
        "--trainer.log_every_n_steps",
        "1",
        "--output_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lightning_diffusion"])
        cli([*tiny, "--experiment", "moons_v"])
        cli([*tiny, "--experiment", "moons_eps", "--model.prediction_type", "epsilon"])
    return out / "moons_v" / "version_0", out / "moons_eps" / "version_0"


def test_two_runs_side_by_side(two_runs, tmp_path):
    folder = main([str(run) for run in two_runs] + ["--output_dir", str(tmp_path)])
    assert folder == tmp_path / "compare_0"
    report = (folder / "report.md").read_text()
    differences = report.split("## Config differences")[1].split("##")[0]
    keys = set(re.findall(r"^\| ([^|]+?) \| ", differences, re.M)) - {"key", "---"}
    # only the keys that differ: what was asked, and what follows from the experiment's name
    assert keys == {
        "experiment",
        "model.init_args.prediction_type",
        "trainer.default_root_dir",
        "trainer.logger[0].init_args.name",
    }, keys
    assert "| model.init_args.prediction_type | v_prediction | epsilon |" in differences
    finals = report.split("## Final metrics")[1].split("##")[0]
    assert "val/swd_ratio" in finals and "train/loss" in finals and "| moons_eps/version_0 | " in finals
    for name in ("curves.png", "samples.png"):
        assert f"]({name})" in report
        width, height = Image.open(folder / name).size
        assert width > 400 and height > 200
    assert main([str(run) for run in two_runs] + ["--output_dir", str(tmp_path)]) == tmp_path / "compare_1"


def test_config_differences_keep_only_the_keys_that_differ():
    a = {"model": {"lr": 0.1, "layers": [1, 2]}, "seed": 0, "callbacks": [{"class_path": "EMA"}]}
    b = {"model": {"lr": 0.2, "layers": [1, 2]}, "seed": 0, "callbacks": [{"class_path": "EMA"}, {"class_path": "X"}]}
    assert config_differences([a, b]) == [("callbacks[1].class_path", ["(not set)", "X"]), ("model.lr", [0.1, 0.2])]


def test_not_a_run_folder_is_one_sentence(tmp_path, capsys):
    for args in ([str(tmp_path)], []):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--output_dir", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["evaluate", "--runz", "x"],
            "unrecognized arguments: --runz x: `python -m lightning_diffusion evaluate --help`",
        ),
        (["evaluate", "--num_samples", "abc"], "--num_samples expects int but got 'abc'"),
        (
            ["compare"],
            "compare needs run folders: python -m lightning_diffusion compare outputs/<experiment>/version_N",
        ),
        (["export", "a.ckpt"], "export needs a checkpoint and a new folder: python -m lightning_diffusion export"),
        (["inspect", "--num_samples", "x"], "`python -m lightning_diffusion inspect --help` lists every option"),
        (
            ["train"],
            "'train' is not a subcommand: use one of 'fit', 'validate', 'test', 'predict', 'evaluate', 'compare'",
        ),
        ([], "a command is missing: `python -m lightning_diffusion --help` lists the commands"),
    ],
)
def test_a_bad_command_line_of_a_tool_is_one_sentence_naming_that_command(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert "lightning_diffusion fit" not in err


def test_the_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        command(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for name in ("fit", "validate", "test", "predict", "evaluate", "compare", "export", "inspect"):
        assert re.search(rf"^ +{name} +[A-Z]", text, re.M), (name, text)
    for name in ("evaluate", "compare", "export", "inspect"):
        with pytest.raises(SystemExit) as exit_info:
            command([name, "--help"])
        assert exit_info.value.code == 0 and f"usage: python -m lightning_diffusion {name}" in capsys.readouterr().out
