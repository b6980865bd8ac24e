"""Resume: `--ckpt_path last` without a checkpoint is one sentence, a validation draws nothing from the training's
random streams (and its loss is the same number twice), and an image run with DataLoader workers and random flips
resumes exactly. The moons proof that 2 + 2 epochs equal 4 straight ones, bit for bit, with the first 2
stopped by a SIGTERM, is in tests/cli/test_signals.py; the one of a signal sent to a CLI process from outside, there too
(under DDP)."""

import lightning as L
import pytest
import torch
from conftest import REPO, cpu_overrides
from diffusers import DDPMScheduler
from lightning.pytorch.callbacks import Callback

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser

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


class StreamWatch(Callback):
    """Whether each validation step left the global random streams (the CPU's and the device's) as it found them."""

    def __init__(self) -> None:
        self.untouched: list[bool] = []

    @staticmethod
    def states(device: torch.device) -> list[torch.Tensor]:
        return [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])]

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.before = self.states(pl_module.device)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        after = self.states(pl_module.device)
        self.untouched.append(all(torch.equal(a, b) for a, b in zip(self.before, after, strict=True)))


@pytest.mark.parametrize(
    "accelerator",
    ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_the_validation_loss_is_repeatable_and_leaves_the_training_streams_alone(tmp_path, accelerator):
    """Each validation batch draws its times and noise from its own seed: the same checkpoint gives the same val/loss
    under any global seed, and a validation step leaves the training's random streams as they were (so that a run
    that validates resumes exactly)."""
    L.seed_everything(0)
    data = Toy2DDataModule(num_samples=256, num_val_samples=192, batch_size=64)
    built = {"denoiser": MLPDenoiser(hidden_dim=16, num_blocks=1), "scheduler": DDPMScheduler()}
    model = DiffusionModule(**built, sample_shape=(2,))
    quiet = {"accelerator": accelerator, "devices": 1, "logger": False, "enable_progress_bar": False}
    L.Trainer(max_epochs=1, limit_val_batches=0, default_root_dir=tmp_path, **quiet).fit(model, data)
    (ckpt,) = tmp_path.rglob("*.ckpt")
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        watch = StreamWatch()
        trainer = L.Trainer(callbacks=[watch], enable_model_summary=False, **quiet)
        (metrics,) = trainer.validate(DiffusionModule.load_from_checkpoint(ckpt, **built), data, verbose=False)
        losses.append(metrics["val/loss"])
        assert watch.untouched == [True, True, True]
    assert losses[0] == losses[1]


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
