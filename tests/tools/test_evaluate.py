"""`python -m lightning_diffusion evaluate` on 2D models: a grid equals `validate` cell for cell, rows have the
promised columns, an interrupted grid resumes with only its missing cells, the options file and a saved config name
the same grid, bad input is one sentence before any work, features streamed in batches give the statistics of the
whole set, and W&B gets the table and the plots. Image grids: test_evaluate_images.py."""

import dataclasses
import json

import pytest
import torch
import yaml
from helpers.evaluate_runs import rows_of, run

from lightning_diffusion.metrics.features import Comparison, SampleMetrics, frechet_distance
from lightning_diffusion.tools import eval_folders, evaluate

COLUMNS_2D = [
    "checkpoint",
    "run",
    "step",
    "sampler",
    "steps",
    "nfe",
    "guidance",
    "samples",
    "seeds",
    "swd",
    "swd_std",
    "swd_floor",
    "swd_ratio",
    "swd_ratio_std",
    "mmd",
    "mmd_std",
    "chi2",
    "chi2_std",
    "chi2_floor",
    "chi2_ratio",
    "chi2_ratio_std",
    "mmd_floor",
    "swd_floor_std",
    "mmd_floor_std",
    "chi2_floor_std",
    "seconds",
]


def test_2d_grid_equals_validate_and_counts_network_calls(trained_moons, tmp_path):
    from lightning_diffusion.cli import main

    main(
        [
            "validate",
            "--config",
            str(trained_moons.run / "config.yaml"),
            "--ckpt_path",
            str(trained_moons.last),
            "--model.sampler",
            "DDIMScheduler",
            "--model.num_inference_steps",
            "10",
            "--model.val_num_samples",
            "500",
            "--output_dir",
            str(tmp_path / "validate"),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    (path,) = (tmp_path / "validate").rglob("metrics_validate.json")
    validated = json.loads(path.read_text())["metrics"]

    folder = run(
        tmp_path,
        "--runs",
        f"[{trained_moons.run}]",
        "--samplers",
        "[DDIMScheduler, HeunDiscreteScheduler]",
        "--steps",
        "[5, 10]",
        "--num_samples",
        "500",
        "--num_seeds",
        "1",
    )
    assert folder == tmp_path / "evals" / "moons" / "eval_0"
    columns, rows = rows_of(folder)
    assert columns == COLUMNS_2D and len(rows) == 4
    cell = {(row["sampler"], int(row["steps"])): row for row in rows}
    ddim = cell["DDIMScheduler", 10]
    for name in (
        "swd",
        "swd_floor",
        "swd_ratio",
        "mmd",
        "mmd_floor",
        "swd_floor_std",
        "mmd_floor_std",
        "chi2",
        "chi2_ratio",
    ):
        assert float(ddim[name]) == pytest.approx(validated[f"val/{name}"], rel=1e-5, abs=1e-7), name
    assert ddim["swd_std"] == "" and ddim["seeds"] == "1" and ddim["samples"] == "500"
    # NFE counts network calls: Heun's method calls the network twice per step but once for the last
    assert [int(cell[s, k]["nfe"]) for s in ("DDIMScheduler", "HeunDiscreteScheduler") for k in (5, 10)] == [
        5,
        10,
        9,
        19,
    ]
    assert {row["step"] for row in rows} == {str(torch.load(trained_moons.last, weights_only=False)["global_step"])}
    assert (folder / "results.md").is_file() and (folder / "quality_vs_nfe.png").is_file()
    assert not (folder / "quality_vs_guidance.png").exists() and not (folder / "quality_vs_step.png").exists()
    assert json.loads((folder / "results.json").read_text())["rows"][0]["sampler"] == "DDIMScheduler"


def test_an_interrupted_grid_resumes_with_only_its_missing_cells(trained_moons, tmp_path, monkeypatch, capsys):
    computed = []
    real_cell_row = evaluate.cell_row

    def cell_row(model, scorer, cell, *args):
        if len(computed) == 2 and interrupt:
            raise KeyboardInterrupt  # what a kill between two cells leaves
        computed.append(cell)
        return real_cell_row(model, scorer, cell, *args)

    monkeypatch.setattr(evaluate, "cell_row", cell_row)
    grid = [
        "--runs",
        f"[{trained_moons.run}]",
        "--samplers",
        "[DDIMScheduler, UniPCMultistepScheduler]",
        "--steps",
        "[4, 8]",
        "--num_samples",
        "200",
        "--num_seeds",
        "2",
    ]
    interrupt = True
    with pytest.raises((SystemExit, KeyboardInterrupt)):  # errors.one_line_errors: exit 130, as after Ctrl-C
        run(tmp_path, *grid)
    folder = tmp_path / "evals" / "moons" / "eval_0"
    before = (folder / "results.csv").read_text()
    assert len(rows_of(folder)[1]) == 2 and not (folder / "results.md").exists()  # no finished cell lost

    interrupt, computed[:] = False, []
    assert run(tmp_path, *grid) == folder
    assert [(c.sampler, c.steps) for c in computed] == [("UniPCMultistepScheduler", 4), ("UniPCMultistepScheduler", 8)]
    columns, rows = rows_of(folder)
    assert (folder / "results.csv").read_text().startswith(before) and len(rows) == 4
    assert all(float(row["swd_std"]) > 0 for row in rows)  # two seeds: a spread
    markdown = (folder / "results.md").read_text()

    computed[:] = []
    assert run(tmp_path, *grid) == folder and computed == []  # complete: nothing to do, nothing rewritten
    assert "already in" in capsys.readouterr().out and (folder / "results.md").read_text() == markdown
    assert run(tmp_path, *grid[:-2], "--num_seeds", "1") == folder.with_name("eval_1")  # other options: a new folder


def test_the_options_file_and_a_saved_config_name_the_same_grid(tmp_path):
    """`--config options.yaml` plus overrides gives the options; an eval folder whose config.yaml holds them (also
    without the unset ones, as the parser dumped them) is the one a resume continues."""
    (tmp_path / "options.yaml").write_text("runs: [outputs/moons/version_0]\nsteps: [5, 10]\nnum_seeds: 2\n")
    values = evaluate.make_parser().parse_args(["--config", str(tmp_path / "options.yaml"), "--num_seeds", "1"])
    options = evaluate.Options(**{k: v for k, v in values.as_dict().items() if k != "config"})
    assert (options.runs, options.steps, options.num_seeds, options.samplers) == (
        ["outputs/moons/version_0"],
        [5, 10],
        1,
        None,
    )
    options.output_dir = str(tmp_path / "evals")
    root = tmp_path / "evals" / "moons"
    saved = {k: v for k, v in dataclasses.asdict(options).items() if v is not None}
    for n, changes in enumerate(({"num_seeds": 3}, {"progress": False, "wandb_project": "p"}, {"steps": [5]})):
        (root / f"eval_{n}").mkdir(parents=True)
        (root / f"eval_{n}" / "config.yaml").write_text(yaml.safe_dump({**saved, **changes}))
    assert eval_folders.eval_folder(options, tmp_path, "moons") == root / "eval_1"  # progress and W&B change no number
    options.resume = False
    assert eval_folders.eval_folder(options, tmp_path, "moons") == root / "eval_3"


def test_bad_input_is_one_sentence_before_any_work(trained_moons, tmp_path, capsys):
    run_folder = f"[{trained_moons.run}]"
    cases = [
        ([], "Nothing to evaluate"),
        (["--runs", f"[{tmp_path / 'nothing'}]"], "holds no checkpoint"),
        (["--runs", run_folder, "--steps", "x"], "--steps expects a list ([x, y]) but got 'x'"),
        (["--runs", run_folder, "--steps", "[x]"], "--steps expects int but got 'x'"),
        (["--runs", run_folder, "--guidance", "[2.0]"], "needs a conditional model"),
        (["--runs", run_folder, "--samplers", "[NoSuchScheduler]", "--steps", "[5]"], "NoSuchScheduler"),
        (["--runs", run_folder, "--cells", "[DDIMScheduler]"], "SAMPLER:STEPS"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run(tmp_path, *args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("error: ") and "fit --help" not in err
    assert not (tmp_path / "evals").exists()  # no eval folder for a grid that never ran a cell


class GivenFeatures(SampleMetrics):
    """A metric whose 'images' are already features (N, D)."""

    def _features(self, images):
        return images, None


def test_features_streamed_in_batches_equal_the_whole_set():
    """As the image scorer streams them: the real set once, then generated sets one at a time, reset in between."""
    torch.manual_seed(0)
    real, generated = torch.randn(300, 6, dtype=torch.float64), torch.randn(200, 6, dtype=torch.float64) + 0.5
    whole, batched = Comparison(GivenFeatures(batch_size=300)), Comparison(GivenFeatures(64, kid_max_samples=100))
    for comparison in (whole, batched):
        comparison.add(real, real=True)
        comparison.add(torch.randn(50, 6, dtype=torch.float64))  # a generated set before: dropped by reset
        comparison.reset()
        comparison.add(generated)
    assert batched.scores()["fd"].item() == pytest.approx(whole.scores()["fd"].item(), rel=1e-9)
    assert batched.scores()["fd"].item() == pytest.approx(frechet_distance(real, generated).item(), rel=1e-9)
    # KID keeps at most kid_max_samples features per set
    assert [sum(len(f) for f in kept) for kept in batched.kept.values()] == [100, 100]


def test_wandb_gets_the_table_and_the_plots(trained_moons, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    folder = run(
        tmp_path,
        "--runs",
        f"[{trained_moons.run}]",
        "--samplers",
        "[DDIMScheduler]",
        "--steps",
        "[3, 6]",
        "--num_samples",
        "100",
        "--num_seeds",
        "1",
        "--wandb_project",
        "evaluate-test",
    )
    (offline,) = (folder / "wandb").glob("offline-run-*")
    media = offline / "files" / "media"
    assert list((media / "table" / "evaluate").glob("results_*.table.json"))
    assert list((media / "images" / "evaluate").glob("quality_vs_nfe_*.png"))
