"""Every mistake of issue 15 answered in one sentence: each case runs the real command (a training command, inspect
or export) and must end with its exit code, one line `error: ...` holding the expected words, no traceback, and
nothing written. The cases are data (CASES), shared with the table of notes/reliability.md, which

    python tests/cli/test_errors.py > /tmp/table.md

fills by running every case in a subprocess of the real CLI (`python tests/cli/test_errors.py WORDS...`: only the cases
whose name holds one of the words)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from conftest import REPO, cpu_overrides  # noqa: E402
from helpers.fakes import GENDERS, make_dataset, write_cifar10, write_idx, write_parquet  # noqa: E402
from helpers.stop_signals import SENDER, send  # noqa: E402

from lightning_diffusion.__main__ import main as command  # noqa: E402

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
    signal: tuple = ()  # (name, stage, batch[, again]): the run sends itself that signal (helpers.stop_signals.send)


CASES = [
    # the command line and the config
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
        ("The training data gives no batch: 100 samples and batch_size 256",),
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
        ("a_file/out: not a directory", "--output_dir"),
    ),
    # commands that need a checkpoint, and the checkpoints given
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
    # data files
    Case("MNIST files missing, download off", mnist("data/empty"), 2, ("MNIST not found in data/empty/MNIST/raw",)),
    Case(
        "an IDX file with a wrong magic number",
        mnist("data/magic"),
        2,
        ("train-images-idx3-ubyte is not an IDX file of images", "magic number is 0x00000000, expected 0x00000803"),
    ),
    Case(
        "a truncated IDX file",
        mnist("data/truncated"),
        2,
        ("train-images-idx3-ubyte is truncated", "300 images of 28x28"),
    ),
    Case("fewer labels than images", mnist("data/count"), 2, ("t10k-labels-idx1-ubyte holds 99 labels", "100 images")),
    Case("labels outside the classes", mnist("data/range"), 2, ("labels from 12 to 12, expected 0 to 9",)),
    Case("a corrupt .gz", mnist("data/badgz"), 2, ("train-images-idx3-ubyte.gz is not a readable gzip file",)),
    Case(
        "CIFAR-10 files that fail their checksums",
        images(CIFAR, "--data.init_args.root", "data/cifar"),
        2,
        ("do not match the published checksums", "data/cifar/cifar-10-batches-py"),
    ),
    Case("CelebFaces without an image column", celeb("data/celeb_columns"), 2, ("has no image column",), env=OFFLINE),
    Case("CelebFaces without a decodable image", celeb("data/celeb_broken"), 2, ("could be decoded",), env=OFFLINE),
    Case(
        "CelebFaces from the Hub, offline",
        celeb("nobody/nothing-here"),
        2,
        ("could not load 'nobody/nothing-here' from the Hugging Face Hub",),
        env=OFFLINE,
    ),
    # during the run
    Case(
        "a non-finite loss",
        [
            *FIT,
            "--model.optimizer.init_args.lr",
            "1e30",
            "--trainer.max_steps",
            "20",
            "--trainer.enable_progress_bar",
            "false",
        ],
        1,
        ("non-finite loss",),
        writes=None,
    ),
    Case(
        "val_num_samples above half the held-out data",
        [*FIT, "--model.val_num_samples", "5000"],
        2,
        ("val_num_samples",),
    ),
    # the other entry points
    Case(
        "inspect --timesteps beyond the schedule",
        ["inspect", "--config", MOONS, "--output_dir", "out", "--timesteps", "[0, 1000]"],
        2,
        ("--timesteps 1000 lie outside the schedule's 0 to 999",),
    ),
    Case(
        "export of an ImageClassifier",
        ["export", "classifier.ckpt", "exports/a"],
        2,
        ("export needs a DiffusionModule",),
    ),
    Case("export of a 2D model", ["export", CKPT, "exports/b"], 2, ("only image UNets",)),
    Case(
        "export into a folder that is not empty",
        ["export", CKPT, "exports/full"],
        2,
        ("exports/full already exists",),
    ),
    Case(
        "export of a truncated checkpoint",
        ["export", "truncated.ckpt", "exports/c"],
        2,
        ("not a readable checkpoint",),
    ),
    # stop signals, which the run sends itself at a batch (tested in test_signals.py)
    Case(
        "SIGTERM during fit",
        [*FIT, "--trainer.enable_progress_bar", "false"],
        143,
        ("SIGTERM: saved",),
        writes=None,
        line="SIGTERM: saved",
        table_only=True,
        signal=("SIGTERM", "train", 2),
    ),
    Case(
        "Ctrl-C (SIGINT) during fit",
        [*FIT, "--trainer.enable_progress_bar", "false"],
        130,
        ("SIGINT: saved",),
        writes=None,
        line="SIGINT: saved",
        table_only=True,
        signal=("SIGINT", "train", 2),
    ),
    Case(
        "a second Ctrl-C while the first waits for the end of a slow batch",
        [*FIT, "--trainer.enable_progress_bar", "false"],
        130,
        ("aborted by a second Ctrl-C",),
        writes=None,
        table_only=True,
        signal=("SIGINT", "train", 2, 0.2),
    ),
    Case(
        "SIGTERM during predict",
        PREDICT_4_BATCHES,
        143,
        ("predict stopped",),
        line="SIGTERM: predict stopped",
        table_only=True,
        signal=("SIGTERM", "predict", 1),
    ),
    Case(
        "Ctrl-C during predict",
        PREDICT_4_BATCHES,
        130,
        ("predict stopped",),
        line="SIGINT: predict stopped",
        table_only=True,
        signal=("SIGINT", "predict", 1),
    ),
    # the traceback, when asked for
    Case(
        "fit without --config, LIGHTNING_DIFFUSION_DEBUG=1",
        ["fit"],
        1,
        ("ArgumentError",),
        line="argparse.ArgumentError",
        env={"LIGHTNING_DIFFUSION_DEBUG": "1"},
        table_only=True,
    ),
]


def make_world(root: Path) -> None:
    """The files the cases need, in `root` (the cases run there): data with one fault each, configs, checkpoints."""
    from lightning_diffusion.cli import main

    data = root / "data"
    write_idx(data / "mnist/MNIST/raw")
    (data / "empty").mkdir(parents=True)
    faults = {
        "magic": lambda raw: _patch(raw / "train-images-idx3-ubyte", lambda b: bytes(4) + b[4:]),
        "truncated": lambda raw: _patch(raw / "train-images-idx3-ubyte", lambda b: b[:5000]),
        "count": lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 99) + bytes(99)),
        "range": lambda raw: (raw / "train-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, 300) + bytes([12]) * 300
        ),
        "badgz": lambda raw: (
            (raw / "train-images-idx3-ubyte").unlink(),
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b?"),
        ),
    }
    for name, fault in faults.items():
        fault(write_idx(data / name / "MNIST/raw"))
    write_cifar10(data / "cifar/cifar-10-batches-py")
    write_parquet(data / "celeb_columns", make_dataset(GENDERS[:6], corrupt=False, columns=("picture", "gender")))
    write_parquet(data / "celeb_broken", undecodable_faces())

    (root / "bad.yaml").write_text("experiment: bad\ntrainer: [max_epochs: 1\n")
    (root / "typo.yaml").write_text("trainer:\n  max_epoch: 3\n")
    (root / "a_file").write_text("a file where a folder is expected\n")
    (root / "text.ckpt").write_text("not a checkpoint\n")
    with contextlib.chdir(root), _argv(["lightning_diffusion"]):
        main(
            [
                *FIT,
                "--output_dir",
                "out",
                "--experiment",
                "trained",
                "--trainer.max_steps",
                "2",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
            ]
        )
    good = (root / CKPT).resolve().read_bytes()
    (root / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    checkpoint = torch.load(root / CKPT, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"] = {
        "_class_path": "lightning_diffusion.metrics.classifier.ImageClassifier",
        "sample_shape": (1, 28, 28),
        "num_classes": 10,
        "num_features": 128,
    }
    torch.save(checkpoint, root / "classifier.ckpt")
    (root / "metrics.yaml").write_text(
        "model:\n  val_num_samples: 8\n  sample_metrics:\n"
        "    - class_path: lightning_diffusion.metrics.features.ClassifierMetrics\n"
        f"      init_args:\n        checkpoint: {CKPT}\n"
    )
    (root / "exports/full").mkdir(parents=True)
    (root / "exports/full/keep.txt").write_text("a user's file\n")
    for version, content in (("version_0", good), ("version_1", good[:1000])):  # the newest one is damaged
        folder = root / "out/fallback" / version / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(content)
        os.utime(folder / "last.ckpt", (1e9, 1e9 + int(version[-1])))


def undecodable_faces() -> datasets.Dataset:
    """Rows of the celeb columns whose images are not images."""
    features = datasets.Features({"image": datasets.Image(), "gender": datasets.Value("int64")})
    rows = {"image": [{"bytes": b"not an image", "path": None}] * 4, "gender": [1, 2, 1, 2]}
    return datasets.Dataset.from_dict(rows, features=features)


@contextlib.contextmanager
def _argv(argv: list[str]):
    saved, sys.argv = sys.argv, argv  # main(args) is the command line; pytest's own arguments are not
    try:
        yield
    finally:
        sys.argv = saved


def _patch(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root (but datasets' own download cache) with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and "hf" not in p.relative_to(root).parts
    }


def written(before: dict, after: dict) -> list[str]:
    return sorted(name for name in after if before.get(name) != after[name])


# ---------------------------------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_world(root)
    return root


def offline_hub(monkeypatch) -> None:
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("case", [case for case in CASES if not case.table_only], ids=lambda case: case.what)
def test_every_mistake_is_one_sentence(case, world, monkeypatch, capsys):
    if "accelerator" in case.args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(world)
    monkeypatch.delenv("LIGHTNING_DIFFUSION_DEBUG", raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    if case.env:
        offline_hub(monkeypatch)
    before = snapshot(world)
    with pytest.raises(SystemExit) as exit_info:
        command(list(case.args))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == case.code, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    for words in case.words:
        assert words.lower() in lines[0].lower(), lines[0]
    if case.writes is False:
        assert written(before, snapshot(world)) == []


def test_ckpt_path_last_skips_an_unreadable_newest_checkpoint(world, monkeypatch):
    from lightning_diffusion.cli import main

    case = next(case for case in CASES if case.what.startswith("--ckpt_path last whose newest"))
    monkeypatch.chdir(world)
    with pytest.warns(UserWarning, match=r"skipped: out/fallback/version_1/checkpoints/last\.ckpt is not a readable"):
        cli = main([*case.args, "--trainer.enable_progress_bar", "false"])
    assert cli.config.predict.ckpt_path == "out/fallback/version_0/checkpoints/last.ckpt"
    assert (world / "out/fallback/version_2/samples.npz").is_file()  # a new run folder, the damaged one untouched
    assert (world / "out/fallback/version_1/checkpoints/last.ckpt").stat().st_size == 1000


def test_the_traceback_stays_available_behind_the_debug_variable(world, monkeypatch):
    from jsonargparse import ArgumentError

    from lightning_diffusion.cli import main

    monkeypatch.chdir(world)
    monkeypatch.setenv("LIGHTNING_DIFFUSION_DEBUG", "1")
    with pytest.raises(ArgumentError, match="the following arguments are required: denoiser"):
        main(["fit"])
    with pytest.raises(ValueError, match="gives no batch"):
        main([*FIT, "--data.init_args.num_samples", "100", "--output_dir", "out"])
    assert not (world / "out/moons").exists()  # the failed run left no folder behind


def test_the_real_process_prints_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_diffusion", "fit"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "LIGHTNING_DIFFUSION_DEBUG": ""},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: DiffusionModule needs denoiser:") and result.stderr.count("\n") == 1


def test_celeb_cache_follows_the_files_not_only_the_path(tmp_path, monkeypatch):
    """Parquet files replaced at the same path are decoded anew; the cache in use is logged."""
    import lightning_utilities.core.rank_zero as rank_zero

    from lightning_diffusion.data import CelebFacesDataModule

    offline_hub(monkeypatch)
    messages = []
    monkeypatch.setattr(rank_zero.log, "info", lambda message, *args, **kwargs: messages.append(message))
    folder, root = tmp_path / "celeb", tmp_path / "data"

    def write(genders):
        shutil.rmtree(folder, ignore_errors=True)
        write_parquet(folder, make_dataset(genders, corrupt=False))

    def faces():
        dm = CelebFacesDataModule(dataset=str(folder), root=str(root), image_size=8, num_val_samples=2)
        dm.prepare_data()
        dm.setup("fit")
        return dm, len(dm.splits["train"]) + len(dm.splits["val"])

    write([1, 2] * 3)
    first, count = faces()
    assert count == 6
    write([1, 2] * 5)  # other files at the same path
    again, count = faces()
    assert count == 10 and again.cache_path != first.cache_path
    messages.clear()
    assert faces()[0].cache_path == again.cache_path
    assert messages == [f"CelebFaces: using the decoded cache {again.cache_path} (delete it to decode {folder} again)"]


# ---------------------------------------------------------------------------------------------------- the table


def sent(signal: tuple) -> str:
    """How the table says a case's signal."""
    name, stage, batch, *again = signal
    return f" + {name} at the start of {'training' if stage == 'train' else stage} batch {batch + 1}" + (
        f", again {again[0]} s later" if again else ""
    )


def table(root: Path, words: list[str] | None = None) -> str:
    """Runs every case (or those whose name holds one of `words`) in a subprocess of the real CLI in `root` (a
    world) and returns the markdown table."""
    rows = ["| mistake | command | exit | the line printed | written |", "|---|---|---|---|---|"]
    for case in CASES:
        if words and not any(word.lower() in case.what.lower() for word in words):
            continue
        before = snapshot(root)
        env = {**os.environ, "LIGHTNING_DIFFUSION_DEBUG": "", **case.env}
        # a case with a signal runs the same CLI through helpers.stop_signals.SENDER, which sends it
        argv = (
            ["-c", SENDER, *case.args, *send(*case.signal)]
            if case.signal
            else ["-m", "lightning_diffusion", *case.args]
        )
        result = subprocess.run([sys.executable, *argv], cwd=root, capture_output=True, text=True, env=env)
        lines = [
            re.sub(r"^\S+\.py:\d+: (\w+Warning: )?", "", line.strip())
            for line in result.stderr.splitlines()
            if line.startswith(case.line) or (case.code == 0 and "skipped:" in line)
        ]  # a warning: its text
        if case.table_only and lines:  # a success shows its lines, a traceback its last line
            lines = [" / ".join(lines)] if case.code == 0 else lines[-1:]
        line = lines[0] if len(lines) == 1 else f"{len(lines)} such lines"
        if "Traceback" in result.stderr:
            line = f"a traceback, ending {line}" if case.table_only else f"{line} (and a traceback)"
        args = case.args
        for _config, small in SMALL.items():
            if args[-len(small) :] == small:
                args = [*args[: -len(small)], "(+ CPU test sizes)"]
        command = " ".join(f"'{a}'" if "{" in a or " " in a else a for a in ["python -m lightning_diffusion", *args])
        prefix = "".join(f"{name}={value} " for name, value in case.env.items() if name.startswith("LIGHTNING"))
        shown = line.replace(f"{root}/", "").replace(f"{REPO}/", "").replace(str(Path(sys.executable).parent), "…")
        new = written(before, snapshot(root))
        shown_command = f"`{prefix}{command.replace(f'{REPO}/', '')}`{sent(case.signal) if case.signal else ''}"
        rows.append(
            f"| {case.what} | {shown_command} | {result.returncode} | "
            f"{shown.replace('|', '/')} | {', '.join(new) if new else 'nothing'} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        make_world(Path(folder))
        print(table(Path(folder), sys.argv[1:]))
