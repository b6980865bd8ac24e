"""Post-hoc EMA through the real CLI: a fit with callbacks.PostHocEMA beside the EMA callback writes its snapshots,
a fit stopped by SIGTERM and resumed ends with the snapshots and profiles of a straight one, bit for bit, and
`posthoc-ema` writes a checkpoint that `predict` reads; its mistakes are one line."""

import os
import shutil
import signal

import numpy as np
import pytest
import torch
from conftest import REPO
from helpers.checkpoints import load
from lightning.pytorch.callbacks import Callback

import lightning_diffusion.callbacks as callbacks
from lightning_diffusion.__main__ import main as command
from lightning_diffusion.runs import posthoc_ema_snapshots
from lightning_diffusion.tools.posthoc_ema import reconstruct

pytestmark = pytest.mark.slow  # three fits, one stopped by SIGTERM and resumed: with the other resume proofs

MOONS = str(REPO / "configs" / "moons.yaml")
SMALL = [  # 4 steps an epoch, validation every epoch (where the SIGTERM comes)
    *("--data.init_args.num_samples", "1024", "--data.init_args.num_val_samples", "512"),
    *("--data.init_args.batch_size", "256"),
    *("--model.val_num_samples", "64", "--model.num_inference_steps", "10"),
    *("--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1", "--trainer.max_epochs", "4"),
    "--trainer.callbacks+=lightning_diffusion.callbacks.PostHocEMA",
    *("--trainer.callbacks.snapshot_every_n_steps", "3"),
]


class SigtermAtSecondValidation(Callback):
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking and trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def profiles_of(checkpoint: dict) -> dict:
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("PostHocEMA")]
    return state


@pytest.fixture(scope="module")
def straight_and_resumed(tmp_path_factory):
    from lightning_diffusion.cli import main

    out = tmp_path_factory.mktemp("posthoc_ema") / "outputs"
    common = [*SMALL, "--output_dir", str(out), "--trainer.enable_progress_bar", "false"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["lightning_diffusion"])
        patch.setattr(callbacks, "SigtermAtSecondValidation", SigtermAtSecondValidation, raising=False)
        main(["fit", "--config", MOONS, *common, "--experiment", "straight"])
        with pytest.raises(SystemExit, match="143"):
            stop = "--trainer.callbacks+=lightning_diffusion.callbacks.SigtermAtSecondValidation"
            main(["fit", "--config", MOONS, *common, "--experiment", "resumed", stop])
        main(["fit", "--config", MOONS, *common, "--experiment", "resumed", "--ckpt_path", "last"])
    return out / "straight" / "version_0", out / "resumed" / "version_1"


def test_a_resumed_run_has_the_snapshots_and_profiles_of_a_straight_one(straight_and_resumed):
    straight, resumed = straight_and_resumed
    assert list(posthoc_ema_snapshots(straight)) == [3, 6, 9, 12, 15, 16]  # every 3 steps and at the end
    assert list(posthoc_ema_snapshots(resumed)) == [3, 6, 9, 12, 15, 16]  # 3 and 6 carried from version_0
    for step, path in posthoc_ema_snapshots(straight).items():
        a, b = load(path), load(posthoc_ema_snapshots(resumed)[step])
        assert a["sigma_rels"] == b["sigma_rels"] == [0.05, 0.10]
        for pa, pb in zip(a["profiles"], b["profiles"], strict=True):
            assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa), step
    a, b = profiles_of(load(straight / "checkpoints/last.ckpt")), profiles_of(load(resumed / "checkpoints/last.ckpt"))
    assert a["step"] == b["step"] == 16
    for pa, pb in zip(a["profiles"], b["profiles"], strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_posthoc_ema_writes_a_checkpoint_that_predict_reads(straight_and_resumed, run_cli, tmp_path):
    straight, _ = straight_and_resumed
    (written,) = command(["posthoc-ema", str(straight), "--sigma_rels", "[0.08]"])
    assert written == straight / "posthoc_ema" / "sigma_rel=0.080-step=0000016.ckpt"
    checkpoint = load(written)
    weights, _, _ = reconstruct(straight, 0.08)
    assert all(torch.equal(checkpoint["state_dict"][f"denoiser.{k}"], v) for k, v in weights.items())
    assert "optimizer_states" not in checkpoint and checkpoint["posthoc_ema"]["sigma_rel"] == 0.08
    ema_weights = load(straight / "checkpoints/last.ckpt")["state_dict"]  # the EMA callback's average
    assert not torch.equal(ema_weights["denoiser.input.weight"], checkpoint["state_dict"]["denoiser.input.weight"])
    (again,) = command(["posthoc-ema", str(straight), "--sigma_rels", "[0.08]"])
    assert again.name == "sigma_rel=0.080-step=0000016-1.ckpt" and written.exists()  # nothing overwritten
    run_cli("predict", "--config", MOONS, "--ckpt_path", str(written), "--data.init_args.predict_num_samples", "32")
    (samples,) = tmp_path.rglob("samples.npz")
    assert np.isfinite(np.load(samples)["samples"]).all()


@pytest.mark.parametrize(
    "args,words",
    [
        (["--sigma_rels", "[0.5]"], "sigma_rel must lie between 0 and 0.28"),
        (["--sigma_rels", "[0.1]", "--step", "2"], "no post-hoc EMA snapshot at or before step 2: its first is 3"),
        ([], "posthoc-ema needs a run folder and sigma_rels"),
    ],
)
def test_posthoc_ema_mistakes_are_one_line(straight_and_resumed, capsys, args, words):
    straight, _ = straight_and_resumed
    with pytest.raises(SystemExit) as exit_info:
        command(["posthoc-ema", str(straight), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and words in err and "Traceback" not in err, err


def test_a_run_without_snapshots_is_one_line(straight_and_resumed, tmp_path, capsys):
    run = tmp_path / "version_0"  # a run folder with a checkpoint, trained without PostHocEMA
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(straight_and_resumed[0] / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit):
        command(["posthoc-ema", str(run), "--sigma_rels", "[0.1]"])
    assert f"error: {run} has no post-hoc EMA snapshots" in capsys.readouterr().err
