"""The evaluation grid's guidance-interval, guide and post-hoc EMA axes: the cells they make, the NFE they count
(network evaluations per sample), the columns of results.csv, and the rows of a results.csv from before them."""

import csv
import json

import pytest
import torch
from conftest import REPO
from diffusers import DDPMScheduler

from lightning_diffusion import DiffusionModule
from lightning_diffusion.denoisers import MLPDenoiser
from lightning_diffusion.tools.grid import Cell, cell_key, grid_cells

MOONS = str(REPO / "configs" / "moons.yaml")
TINY = [
    *("--data.init_args.num_samples", "512", "--data.init_args.num_val_samples", "256", "--model.val_num_samples", "0"),
    *("--data.init_args.batch_size", "256"),
    *("--trainer.callbacks", "[lightning_diffusion.callbacks.PostHocEMA]", "--trainer.enable_progress_bar", "false"),
    "--trainer.callbacks.snapshot_every_n_steps",
    "2",
]
INTERVAL = [0.5, 5.0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny unconditional moons runs with post-hoc EMA snapshots: the model (8 steps) and a weaker one (1)."""
    from lightning_diffusion.cli import main

    root = tmp_path_factory.mktemp("grid_axes")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lightning_diffusion"])
        for name, steps in (("model", "8"), ("weak", "1")):
            main(["fit", "--config", MOONS, *TINY, "--trainer.max_steps", steps, "--output_dir", str(root / name)])
    return {name: next((root / name).glob("*/version_0")) for name in ("model", "weak")}


def test_an_unconditional_model_is_guided_only_by_a_guide():
    denoiser = MLPDenoiser(sample_shape=(2,), num_classes=None, hidden_dim=8, num_blocks=1)
    model = DiffusionModule(denoiser=denoiser, scheduler=DDPMScheduler(), sampler="ddim")
    cells = grid_cells(model, ["ddim"], [8], [1.0, 2.0], None, [None, (0.5, 5.0)], [None, "weak.ckpt"], [None, 0.1])
    assert len(cells) == 2 * 2 + 2 * 2 * 2  # intervals x EMA lengths, without a guide at guidance 1 only
    assert all(c.guide == "weak.ckpt" for c in cells if c.guidance != 1.0)
    with pytest.raises(ValueError, match="needs a conditional model or a guide"):
        grid_cells(model, ["ddim"], [8], [2.0], None)


def test_rows_from_before_the_axes_are_the_cells_without_them():
    old_row = {"checkpoint": "a.ckpt", "step": 8, "sampler": "ddim", "steps": 8, "guidance": 1.0}  # no such columns
    keys = ("checkpoint", "step", "sampler", "steps", "guidance", "interval", "guide", "ema")
    assert cell_key(*(old_row.get(k) for k in keys)) == cell_key("a.ckpt", 8, *Cell("ddim", 8, 1.0))
    assert cell_key("a", 8, "ddim", 8, 2, "[0.5, 5.0]", "g", 0.1) == cell_key(
        "a", 8, *Cell("ddim", 8, 2.0, (0.5, 5), "g", 0.1)
    )


@pytest.mark.slow  # two fits and an 18-cell grid
def test_the_grid_over_intervals_guides_and_ema_lengths(runs, tmp_path):
    from lightning_diffusion.__main__ import main

    weak = str(runs["weak"] / "checkpoints" / "last.ckpt")
    args = [
        *("evaluate", "--runs", f"[{runs['model']}]", "--samplers", "[ddim]", "--steps", "[8]"),
        *("--guidance", "[1.0, 2.0]", "--guides", f"[null, {weak}]", "--guidance_intervals", f"[null, {INTERVAL}]"),
        *("--ema_lengths", "[null, 0.05, 0.1]", "--num_samples", "128", "--num_seeds", "2", "--progress", "false"),
        *("--output_dir", str(tmp_path)),
    ]
    folder = main(args)
    with open(folder / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    header = list(rows[0])
    assert header[header.index("guidance") + 1 : header.index("guidance") + 4] == ["interval", "guide", "ema"]
    assert len(rows) == 18
    model = DiffusionModule.load_from_checkpoint(runs["model"] / "checkpoints" / "last.ckpt")
    times = torch.tensor([875, 750, 625, 500, 375, 250, 125, 0])  # ddim's 8 leading timesteps of 1000
    sigma = model.formulation.noise_level(times)
    inside = int(((sigma >= INTERVAL[0]) & (sigma <= INTERVAL[1])).sum())
    assert 0 < inside < 8
    for row in rows:
        guided = row["guide"] != "" and row["guidance"] != "1.0"
        expected = 8 + (0 if not guided else inside if row["interval"] else 8)
        assert int(row["nfe"]) == expected, row  # one evaluation a step, two where guided
    assert {row["interval"] for row in rows} == {"", json.dumps(INTERVAL)} and {row["ema"] for row in rows} == {
        "",
        "0.05",
        "0.1",
    }
    own, averaged = (
        [r for r in rows if r["guide"] == "" and r["interval"] == "" and r["ema"] == e] for e in ("", "0.1")
    )
    assert own[0]["swd"] != averaged[0]["swd"]  # other weights, other samples
    assert (folder / "quality_vs_ema.png").is_file()
    again = main(args)  # complete: nothing is sampled again
    assert again == folder and len(list(csv.DictReader(open(folder / "results.csv", newline="")))) == 18


@pytest.mark.slow  # the session's moons training, if no other test of this process made it
def test_an_ema_length_without_snapshots_is_one_sentence(trained_moons, tmp_path, capsys):
    from lightning_diffusion.__main__ import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--runs", f"[{trained_moons.run}]", "--ema_lengths", "[0.1]", "--output_dir", str(tmp_path)])
    assert "has no post-hoc EMA snapshots" in capsys.readouterr().err and not list(tmp_path.rglob("results.csv"))
