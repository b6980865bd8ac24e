"""The mistakes of issue 15 as data, for tests/cli/test_errors.py (its tests and the table of notes/reliability.md):
what a case is (Case), the command lines the cases share, and the cases of the command line and the config
(COMMAND_LINE) and of the commands that need a checkpoint (CHECKPOINTS). Those of the data files, of a run and of
the other entry points are in error_cases_runs.py; test_errors.CASES puts them all in the table's order."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO, cpu_overrides

MOONS, MNIST_COND = str(REPO / "configs/moons.yaml"), str(REPO / "configs/mnist_cond.yaml")
CIFAR, CELEB = str(REPO / "configs/cifar10.yaml"), str(REPO / "configs/celeb_cond.yaml")
CKPT = "out/trained/version_0/checkpoints/last.ckpt"  # a moons model trained 2 steps (the world makes it)
FIT = ["fit", "--config", MOONS]
PREDICT = [
    "predict",
    "--config",
    MOONS,
    "--data.init_args.predict_num_samples",
    "4",
    "--model.num_inference_steps",
    "2",
]
PREDICT_4_BATCHES = [
    "predict",
    "--config",
    MOONS,
    "--ckpt_path",
    CKPT,
    "--data.init_args.predict_num_samples",
    "1024",
    "--model.num_inference_steps",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}


def _without(args: list[str], option: str) -> list[str]:
    i = args.index(option)
    return args[:i] + args[i + 2 :]


# what the image configs need to fail as fast on this CPU as they would on a GPU (conftest.cpu_overrides), elided
# in the table; the data's folder is given separately
SMALL = {
    MNIST_COND: _without(cpu_overrides(Path(MNIST_COND), Path("data")), "--data.init_args.root"),
    CIFAR: _without(cpu_overrides(Path(CIFAR), Path("data")), "--data.init_args.root"),
    CELEB: _without(cpu_overrides(Path(CELEB), Path("data"), Path("data")), "--data.init_args.dataset"),
}


def images(config: str, option: str, value: str, *extra: str, subcommand: str = "fit") -> list[str]:
    """`subcommand` of an image config with its data at `value` (of `option`), on CPU in test sizes."""
    return [subcommand, "--config", config, option, value, *extra, *SMALL[config]]


def mnist(root: str, *extra: str, subcommand: str = "fit") -> list[str]:
    return images(MNIST_COND, "--data.init_args.root", root, *extra, subcommand=subcommand)


def celeb(folder: str) -> list[str]:
    return images(CELEB, "--data.init_args.dataset", folder)


@dataclass
class Case:
    what: str  # the mistake, as the table names it
    args: list[str]  # the command line after `python -m lightning_diffusion`, run in the world folder
    code: int  # the exit code
    words: tuple[str, ...]  # in the `error:` line
    env: dict[str, str] = field(default_factory=dict)
    writes: bool | None = False  # whether files appear in the world (None: not checked, the run decides)
    line: str = "error:"  # how the lines shown in the table start
    table_only: bool = False  # tested on its own (a success, a traceback on purpose, a signal)
    signal: tuple = ()  # (name, stage, batch[, again]): the run sends itself that signal (stop_signals.send)


# the command line and the config
COMMAND_LINE = [
    Case("fit without --config", ["fit"], 2, ("DiffusionModule needs denoiser:", "--config configs/<experiment>.yaml")),
    Case("a config file that does not exist", ["fit", "--config", "nope.yaml"], 2, ("nope.yaml does not exist",)),
    Case("invalid YAML", ["fit", "--config", "bad.yaml"], 2, ("bad.yaml is not valid YAML", "line 3")),
    Case(
        "a misspelt key in a YAML",
        [*FIT, "--config", "typo.yaml"],
        2,
        ("no option 'trainer.max_epoch'", "did you mean 'trainer.max_epochs'"),
    ),
    Case(
        "an unknown model option",
        [*FIT, "--model.not_an_option", "1"],
        2,
        ("DiffusionModule has no option 'not_an_option'", "--model.help DiffusionModule"),
    ),
    Case(
        "a misspelt denoiser option",
        [*FIT, "--model.denoiser.init_args.hidden_dimm", "64"],
        2,
        ("MLPDenoiser has no option 'hidden_dimm'", "did you mean 'hidden_dim'"),
    ),
    Case(
        "a value of the wrong type",
        [*FIT, "--trainer.max_epochs", "ten"],
        2,
        ("--trainer.max_epochs expects int but got 'ten'",),
    ),
    Case(
        "a value outside the choices",
        [*FIT, "--model.prediction_type", "eps"],
        2,
        ("--model.prediction_type expects one of 'epsilon', 'sample', 'v_prediction' but got 'eps'",),
    ),
    Case("an unknown subcommand", ["train", "--config", MOONS], 2, ("'train' is not a subcommand",)),
    Case(
        "an unknown 2D dataset",
        [*FIT, "--data.init_args.dataset", "spiral"],
        2,
        ("--data.dataset expects one of 'moons', 'circles'", "got 'spiral'"),
    ),
    Case(
        "a typo in sampler_kwargs",
        [*FIT, "--model.sampler_kwargs", "{timestep_spacin: trailing}"],
        2,
        ("has no option 'timestep_spacin'", "did you mean 'timestep_spacing'"),
    ),
    Case("batch_size 0", [*FIT, "--data.init_args.batch_size", "0"], 2, ("batch_size", "0")),
    Case(
        "num_val_samples 0 for 2D data",
        [*FIT, "--data.init_args.num_val_samples", "0"],
        2,
        ("num_val_samples must be at least 1", "limit_val_batches 0"),
    ),
    Case(
        "data that gives no training batch",
        [*FIT, "--data.init_args.num_samples", "100"],
        2,
        ("The training data gives no batch: 100 samples and batch_size 1024",),
    ),
    Case(
        "predict of no samples",
        [*PREDICT, "--ckpt_path", CKPT, "--data.init_args.predict_num_samples", "0"],
        2,
        ("The predict data gives no batch", "predict_num_samples to at least 1"),
    ),
    Case("a negative learning rate", [*FIT, "--model.optimizer.init_args.lr", "-1"], 2, ("Invalid learning rate",)),
    Case(
        "a Trainer option Lightning refuses",
        [*FIT, "--trainer.devices", "abc"],
        2,
        ("The Trainer refused its options", "devices"),
    ),
    Case(
        "gradient clipping of a fused optimizer in mixed precision",
        [*FIT, "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "1.0"],
        2,
        ("cannot clip the gradients of a fused AdamW", "fused: false"),
    ),
    Case(
        "--trainer.accelerator gpu without a GPU",
        [*FIT, "--trainer.accelerator", "gpu"],
        2,
        ("no CUDA GPU", "--trainer.accelerator cpu"),
    ),
    Case(
        "an output folder that cannot be made",
        [*FIT, "--output_dir", "a_file/out"],
        2,
        ("a_file/out/moons/version_0: not a directory", "--output_dir"),
    ),
]

# commands that need a checkpoint, and the checkpoints given
CHECKPOINTS = [
    Case("predict without --ckpt_path", PREDICT, 2, ("predict needs a trained model", "--ckpt_path")),
    Case("test without --ckpt_path", ["test", "--config", MOONS], 2, ("test needs a trained model", "measure nothing")),
    Case(
        "a checkpoint that does not exist",
        [*PREDICT, "--ckpt_path", "missing.ckpt"],
        2,
        ("missing.ckpt does not exist",),
    ),
    Case("a folder as checkpoint", [*PREDICT, "--ckpt_path", "out/trained"], 2, ("out/trained is a folder",)),
    Case(
        "a text file as checkpoint",
        [*PREDICT, "--ckpt_path", "text.ckpt"],
        2,
        ("text.ckpt is not a readable checkpoint", "not a PyTorch zip archive"),
    ),
    Case(
        "a truncated checkpoint",
        [*PREDICT, "--ckpt_path", "truncated.ckpt"],
        2,
        ("truncated.ckpt is not a readable checkpoint", "truncated"),
    ),
    Case(
        "an ImageClassifier checkpoint for a DiffusionModule",
        [*PREDICT, "--ckpt_path", "classifier.ckpt"],
        2,
        ("classifier.ckpt holds an ImageClassifier; this config builds a DiffusionModule",),
    ),
    Case(
        "a 2D checkpoint with the MNIST config",
        mnist("data/mnist", "--ckpt_path", CKPT, subcommand="predict"),
        2,
        ("was trained on (2,) samples; this config makes (1, 32, 32)",),
    ),
    Case(
        "an unconditional checkpoint with labelled data",
        [*PREDICT, "--ckpt_path", CKPT, "--data.init_args.labels", "true"],
        2,
        ("was trained with num_classes=None; this config has 2",),
    ),
    Case(
        "--ckpt_path last without any run",
        [*PREDICT, "--ckpt_path", "last", "--experiment", "never", "--output_dir", "out"],
        2,
        ("--ckpt_path last found no last.ckpt", "out/never/version_*/checkpoints"),
    ),
    Case(
        "--ckpt_path last whose newest checkpoint is damaged",
        [*PREDICT, "--ckpt_path", "last", "--experiment", "fallback", "--output_dir", "out"],
        0,
        ("out/fallback/version_0/checkpoints/last.ckpt",),
        writes=True,
        line="--ckpt_path last:",
        table_only=True,
    ),
    Case(
        "a diffusion checkpoint for ClassifierMetrics",
        mnist("data/mnist", "--config", "metrics.yaml"),
        2,
        ("holds a DiffusionModule; ClassifierMetrics needs an ImageClassifier",),
    ),
]
