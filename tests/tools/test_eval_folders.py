"""Evaluations that run at the same moment, and runs that did not finish: an eval folder is claimed whole and shared
only by evaluations of the same options, results.csv gets its header once and each cell once (also from two
processes at once), and a run whose fit did not finish is named in a warning."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from helpers.evaluate_runs import rows_of

from lightning_diffusion.tools import eval_folders, evaluate
from lightning_diffusion.tools.report import append_row, read_rows

COLUMNS = ["checkpoint", "step", "swd"]


def test_results_get_the_header_once_and_each_cell_once(tmp_path):
    path = tmp_path / "results.csv"
    same_cell = lambda row: lambda other: (other["checkpoint"], other["step"]) == (row["checkpoint"], row["step"])  # noqa: E731
    first, again, other = (
        {"checkpoint": "a", "step": 1, "swd": 0.5},
        {"checkpoint": "a", "step": 1, "swd": 0.6},
        {
            "checkpoint": "a",
            "step": 2,
            "swd": 0.4,
        },
    )
    assert append_row(path, COLUMNS, first, same=same_cell(first))
    assert not append_row(path, COLUMNS, again, same=same_cell(again))  # another evaluation scored it first
    assert append_row(path, ["step", "checkpoint", "swd"], other, same=same_cell(other))  # the file's header wins
    assert path.read_text().count("checkpoint") == 1
    assert read_rows(path) == (COLUMNS, [first, other])


def options(tmp_path, **changes):
    values = {"runs": ["outputs/moons/version_0"], "steps": [5], "output_dir": str(tmp_path), **changes}
    return evaluate.Options(**values)


def test_an_eval_folder_is_claimed_whole_and_shared_only_by_the_same_options(tmp_path):
    folder = tmp_path / "moons" / "eval_0"
    mine = eval_folders.claim(folder, options(tmp_path))
    assert mine == folder and yaml.safe_load((folder / "config.yaml").read_text())["steps"] == [5]
    assert eval_folders.claim(folder, options(tmp_path, progress=False)) == folder  # the same numbers: shared
    theirs = eval_folders.claim(folder, options(tmp_path, steps=[10]))  # chose eval_0 at the same moment
    assert theirs == folder.with_name("eval_1")
    assert yaml.safe_load((theirs / "config.yaml").read_text())["steps"] == [10]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["eval_0", "eval_1"]  # no temporary folder left


def test_a_run_whose_fit_did_not_finish_is_named(tmp_path, capsys):
    runs = {name: tmp_path / name for name in ("killed", "finished", "older")}
    for name, run in runs.items():
        (run / "checkpoints").mkdir(parents=True)
        if name != "older":  # a run of an older version has no metrics_fit.json
            (run / "metrics_fit.json").write_text(json.dumps({"finished": name == "finished"}))
    eval_folders.warn_unfinished([run / "checkpoints" / "last.ckpt" for run in runs.values()])
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: the fit of {runs['killed']} did not finish")


@pytest.mark.slow
def test_two_evaluations_of_one_grid_at_once_write_each_cell_once(trained_moons, tmp_path):
    """Started at the same moment, both choose eval_0; each cell is in its results.csv once, with one header."""
    grid = ["--runs", f"[{trained_moons.run}]", "--samplers", "[DDIMScheduler]", "--steps", "[2, 3, 4]"]
    command = [sys.executable, "-m", "lightning_diffusion", "evaluate", *grid, "--num_samples", "200"]
    command += ["--num_seeds", "1", "--progress", "false", "--output_dir", str(tmp_path)]
    env = {**os.environ, "LIGHTNING_DIFFUSION_DEBUG": ""}
    started = [subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in started:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    (folder,) = (tmp_path / "moons").glob("eval_*")
    columns, rows = rows_of(folder)
    assert columns[0] == "checkpoint" and sorted(int(row["steps"]) for row in rows) == [2, 3, 4]
    assert all(row["swd"] != "" and row["mmd"] != "" for row in rows)
    assert (folder / "results.md").read_text().count("| DDIMScheduler |") == 3  # the summary holds every cell
