"""Resume: `--ckpt_path last` without a checkpoint is one sentence, and an image run with DataLoader workers and
random flips resumes exactly. The moons proof that 2 + 2 epochs equal 4 straight ones, bit for bit, with the first 2
stopped by a SIGTERM, is in tests/cli/test_signals.py; the one of a signal sent to a CLI process from outside, there too
(under DDP)."""

import pytest
import torch
from conftest import REPO, cpu_overrides

SMALL = [
    "--config",
    str(REPO / "configs/moons.yaml"),
    "--data.init_args.num_samples",
    "2048",
    "--data.init_args.num_val_samples",
    "256",
    "--model.val_num_samples",
    "64",
    "--model.num_inference_steps",
    "10",
    "--trainer.check_val_every_n_epoch",
    "1",
]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_ckpt_path_last_without_a_checkpoint_is_one_sentence(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", *SMALL, "--experiment", "nothing_yet", "--ckpt_path", "last")
    assert "--ckpt_path last found no last.ckpt or interrupted.ckpt" in capsys.readouterr().err


@pytest.mark.slow
def test_image_run_with_workers_and_flips_resumes_exactly(run_cli, tmp_path, fake_mnist_root):
    """mnist_cond with 2 persistent DataLoader workers and random flips: 2 + 2 epochs equal 4, bit for bit. The
    flips are drawn from state the checkpoint carries, not from the workers' own generators, which a resume
    restarts."""
    config = REPO / "configs/mnist_cond.yaml"
    args = [
        "--config",
        str(config),
        *cpu_overrides(config, fake_mnist_root),
        "--data.init_args.num_workers",
        "2",
        "--data.init_args.persistent_workers",
        "true",
        "--data.init_args.random_flip",
        "true",
        "--trainer.limit_train_batches",
        "4",
        "--trainer.check_val_every_n_epoch",
        "2",
    ]
    run_cli("fit", *args, "--trainer.max_epochs", "4", "--experiment", "straight")
    run_cli("fit", *args, "--trainer.max_epochs", "2", "--experiment", "resumed")
    run_cli("fit", *args, "--trainer.max_epochs", "4", "--experiment", "resumed", "--ckpt_path", "last")
    straight = load(tmp_path / "outputs/straight/version_0/checkpoints/last.ckpt")
    resumed = load(tmp_path / "outputs/resumed/version_1/checkpoints/last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 16
    for key in ("state_dict", "current_model_state"):
        for name, value in straight[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)
