"""Every mistake of issue 15 answered in one sentence: each case runs the real command (a training command, inspect
or export) and must end with its exit code, one line `error: ...` holding the expected words, no traceback, and
nothing written. The cases are data (CASES, from tests/helpers/error_cases.py and error_cases_runs.py, run in the
folder of tests/helpers/error_world.py), shared with the table of notes/reliability.md, which

    python tests/cli/test_errors.py > /tmp/table.md

fills by running every case in a subprocess of the real CLI (`python tests/cli/test_errors.py WORDS...`: only the cases
whose name holds one of the words)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from conftest import REPO  # noqa: E402
from helpers.error_cases import CHECKPOINTS, COMMAND_LINE, FIT, SMALL  # noqa: E402
from helpers.error_cases_runs import DATA_FILES, DURING_THE_RUN, OTHER_ENTRY_POINTS, STOP_SIGNALS, TRACEBACK  # noqa: E402
from helpers.error_world import make_world, snapshot, written  # noqa: E402
from helpers.fakes import make_dataset, write_parquet  # noqa: E402
from helpers.stop_signals import SENDER, send  # noqa: E402

from lightning_diffusion.__main__ import main as command  # noqa: E402

# every case, in the table's order
CASES = [*COMMAND_LINE, *CHECKPOINTS, *DATA_FILES, *DURING_THE_RUN, *OTHER_ENTRY_POINTS, *STOP_SIGNALS, *TRACEBACK]

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
    """Parquet files replaced at the same path are decoded anew (datasets' fingerprint of the files)."""
    from lightning_diffusion.data import CelebFacesDataModule

    offline_hub(monkeypatch)
    folder, root = tmp_path / "celeb", tmp_path / "data"

    def write(genders):
        shutil.rmtree(folder, ignore_errors=True)
        write_parquet(folder, make_dataset(genders, corrupt=False))

    def faces():
        dm = CelebFacesDataModule(dataset=str(folder), root=str(root), image_size=8, num_val_samples=2)
        dm.prepare_data()
        dm.setup("fit")
        return len(dm.splits["train"]) + len(dm.splits["val"])

    write([1, 2] * 3)
    assert faces() == 6
    write([1, 2] * 5)  # other files at the same path
    assert faces() == 10


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
        args, sizes = case.args, []
        for _config, small in SMALL.items():
            if args[-len(small) :] == small:
                args, sizes = args[: -len(small)], ["(+ CPU test sizes)"]
        quoted = [f"'{a}'" if "{" in a or " " in a else a for a in args]
        command = " ".join(["python -m lightning_diffusion", *quoted, *sizes])
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
