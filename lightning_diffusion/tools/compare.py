"""Runs side by side, without a server: their curves, the config keys that differ, final metrics and sample grids.

    python -m lightning_diffusion compare outputs/exp_002_eps_uniform/version_0 outputs/exp_002_v_uniform/version_0

Writes a new <output_dir>/compare_N/: report.md (the runs, a table of only the config keys that differ, the final
value of every logged metric), curves.png (each metric of metrics.csv against the training step, one line per run, on
shared axes) and samples.png (each run's latest sample grid or 2D sample plot, next to each other).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from matplotlib.figure import Figure
from PIL import Image

from lightning_diffusion.errors import PROGRAM, one_line_errors, parse_arguments
from lightning_diffusion.plotting import training_curves_figure
from lightning_diffusion.runs import next_numbered, save_figure, write_atomically
from lightning_diffusion.tools.report import markdown_table

COMMAND = f"{PROGRAM} compare"
AXES = ("epoch", "step")  # the columns of metrics.csv that are not metrics


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config as dotted keys: model.init_args.lr, trainer.callbacks[0].class_path, ..."""
    if isinstance(value, dict):
        return {
            k: v
            for key, item in value.items()
            for k, v in flatten(item, f"{prefix}.{key}" if prefix else str(key)).items()
        }
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def config_differences(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """(key, the value in each run) for the keys whose values are not all the same (missing counts as a value)."""
    flat = [flatten(config) for config in configs]
    keys = sorted({key for config in flat for key in config})
    missing = object()
    rows = [(key, [config.get(key, missing) for config in flat]) for key in keys]
    return [
        (key, ["(not set)" if v is missing else v for v in values])
        for key, values in rows
        if any(json.dumps(v, default=str) != json.dumps(values[0], default=str) for v in values)
    ]


def read_metrics(path: Path) -> dict[str, list[tuple[float, float]]]:
    """metrics.csv as {metric: [(step, value), ...]} (the empty cells of other metrics' rows skipped)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return curves
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            step = float(row.get("step") or "nan")
            for name, value in row.items():
                if name not in AXES and value not in ("", None):
                    curves.setdefault(name, []).append((step, float(value)))
    return curves


def latest_image(run: Path) -> Path | None:
    """The run's newest sample grid (images) or sample plot (2D)."""
    for pattern in ("samples/grid_epoch=*.png", "plots/samples_epoch=*.png"):
        found = sorted(run.glob(pattern))
        if found:
            return found[-1]
    return None


def labels_of(runs: list[Path]) -> list[str]:
    """<experiment>/<version> of each run, or the whole path where two would read the same."""
    short = [f"{run.parent.name}/{run.name}" for run in runs]
    return short if len(set(short)) == len(short) else [str(run) for run in runs]


def samples_figure(images: list[Path | None], labels: list[str]) -> Figure | None:
    shown = [
        (np.asarray(Image.open(path).convert("RGB")), path, label)
        for path, label in zip(images, labels, strict=False)
        if path is not None
    ]
    if not shown:
        return None
    aspect = max(image.shape[1] / image.shape[0] for image, _, _ in shown)  # width / height
    if aspect > 1.5:  # wide plots (2D: real, generated, overlay): one above the other
        fig = Figure(figsize=(9, len(shown) * (9 / aspect + 0.5)), layout="constrained")
        axes = fig.subplots(len(shown), 1, squeeze=False)[:, 0]
    else:  # sample grids: side by side
        fig = Figure(figsize=(4.5 * len(shown), 4.5 / aspect + 0.6), layout="constrained")
        axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, (image, path, label) in zip(axes, shown, strict=False):
        ax.imshow(image)
        ax.set_title(f"{label}\n{path.name}", fontsize=9)
        ax.axis("off")
    return fig


def compare(runs: list[Path], output_dir: str = "outputs", command: str = "") -> Path:
    """The report of the runs, in a new compare_N folder (returned).

    Args:
        runs: Run folders (outputs/<experiment>/version_N) to compare.
        output_dir: The report goes to <output_dir>/compare_N.
        command: The command line, quoted in the report.
    """
    for run in runs:
        if not (run / "config.yaml").is_file() and not (run / "metrics.csv").is_file():
            raise ValueError(
                f"{run} is not a run folder (it has neither config.yaml nor metrics.csv): give folders "
                "such as outputs/<experiment>/version_N."
            )
    labels = labels_of(runs)
    configs = [
        yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {} for run in runs
    ]
    curves = [read_metrics(run / "metrics.csv") for run in runs]
    folder = next_numbered(Path(output_dir), "compare_{}")
    folder.mkdir(parents=True)
    figures = {
        "curves.png": training_curves_figure(curves, labels),
        "samples.png": samples_figure([latest_image(run) for run in runs], labels),
    }
    written = [save_figure(fig, folder / name) for name, fig in figures.items() if fig is not None]

    differences = config_differences(configs)
    finals = sorted({name for run in curves for name in run}, key=lambda n: (not n.startswith("train"), n))
    final_rows = [
        [label, *[run[name][-1][1] if name in run else "-" for name in finals]]
        for label, run in zip(labels, curves, strict=False)
    ]
    folders = zip(labels, runs, strict=True)
    text = [
        f"# Comparison of {len(runs)} runs",
        "",
        f"`{command}`" if command else None,
        "",
        markdown_table(["run", "folder"], [[label, os.path.relpath(run, folder)] for label, run in folders]),
        "",
        "## Config differences",
        "",
        markdown_table(["key", *labels], [[key, *values] for key, values in differences])
        if differences
        else "The configs are identical.",
        "",
        "## Final metrics (last logged value)",
        "",
        markdown_table(["run", *finals], final_rows) if finals else "No metrics.csv.",
        "",
    ]
    text += [f"## {path.stem.capitalize()}\n\n![{path.stem}]({path.name})\n" for path in written]
    write_atomically(folder / "report.md", "\n".join(line for line in text if line is not None))
    print(f"Wrote {folder}: report.md" + "".join(f", {path.name}" for path in written))
    return folder


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file of these options.")
    parser.add_argument("runs", type=str, nargs="+", help="Run folders (outputs/<experiment>/version_N) to compare.")
    parser.add_function_arguments(compare, skip={"runs", "command"})
    return parser


def main(argv: list[str]) -> Path:
    """`python -m lightning_diffusion compare RUN RUN ...`; an expected error ends as one line `error: ...`."""
    with one_line_errors(argv, COMMAND):
        required = (
            f"compare needs run folders: {COMMAND} outputs/<experiment>/version_N outputs/<experiment>/version_M ..."
        )
        args = parse_arguments(make_parser(), argv, COMMAND, required=required)
        return compare([Path(run) for run in args.runs], args.output_dir, " ".join([COMMAND, *argv]))
