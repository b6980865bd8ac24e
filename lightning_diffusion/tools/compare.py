"""Runs side by side, without a server: their curves, the config keys that differ, final metrics and sample grids.

    python -m lightning_diffusion.tools.compare outputs/exp_002_eps_uniform/version_0 outputs/exp_002_v_uniform/version_0

Writes a new <output_dir>/compare_N/: report.md (the runs, a table of only the config keys that differ, the final
value of every logged metric), curves.png (each metric of metrics.csv against the training step, one line per run, on
shared axes) and samples.png (each run's latest sample grid or 2D sample plot, next to each other).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from matplotlib.figure import Figure
from PIL import Image

from lightning_diffusion.errors import PROGRAM, one_line_errors, parse_arguments
from lightning_diffusion.plotting import save_figure

AXES = ("epoch", "step")  # the columns of metrics.csv that are not metrics


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=f"{PROGRAM}.tools.compare", description=__doc__.splitlines()[0], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file of these options.")
    parser.add_argument("runs", type=str, nargs="+", help="Run folders (outputs/<experiment>/version_N) to compare.")
    parser.add_argument("--output_dir", type=str, default="outputs", help="The report goes to <output_dir>/compare_N.")
    return parser


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


def curves_figure(curves: list[dict[str, list[tuple[float, float]]]], labels: list[str]) -> Figure | None:
    """One panel per metric (the floors' spreads left to the table), one line per run, against the step."""
    names = sorted(
        {name for run in curves for name in run if not name.endswith("_std")},
        key=lambda n: (not n.startswith("train"), n),
    )
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig = Figure(figsize=(4.4 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax, name in zip(axes, names, strict=False):
        for run, label in zip(curves, labels, strict=False):
            points = run.get(name, [])
            if points:
                steps, values = zip(*points, strict=False)
                ax.plot(steps, values, marker="o" if len(points) < 20 else None, markersize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
    for ax in axes[len(names) :]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    return fig


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


def _cell(value: Any) -> str:
    text = (
        f"{value:.4g}"
        if isinstance(value, float)
        else json.dumps(value)
        if isinstance(value, (list, dict))
        else str(value)
    )
    return text.replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def compare(runs: list[Path], output_dir: Path, command: str = "") -> Path:
    """Writes the report of `runs` to a new output_dir/compare_N and returns that folder."""
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
    n = 0
    while (output_dir / f"compare_{n}").exists():
        n += 1
    folder = output_dir / f"compare_{n}"
    folder.mkdir(parents=True)
    figures = {
        "curves.png": curves_figure(curves, labels),
        "samples.png": samples_figure([latest_image(run) for run in runs], labels),
    }
    written = [save_figure(fig, folder / name) for name, fig in figures.items() if fig is not None]

    differences = config_differences(configs)
    finals = sorted({name for run in curves for name in run}, key=lambda n: (not n.startswith("train"), n))
    final_rows = [
        [label, *[run[name][-1][1] if name in run else "-" for name in finals]]
        for label, run in zip(labels, curves, strict=False)
    ]
    text = [
        f"# Comparison of {len(runs)} runs",
        "",
        f"`{command}`" if command else None,
        "",
        table(
            ["run", "folder"], [[label, os.path.relpath(run, folder)] for label, run in zip(labels, runs, strict=False)]
        ),
        "",
        "## Config differences",
        "",
        table(["key", *labels], [[key, *values] for key, values in differences])
        if differences
        else "The configs are identical.",
        "",
        "## Final metrics (last logged value)",
        "",
        table(["run", *finals], final_rows) if finals else "No metrics.csv.",
        "",
    ]
    text += [f"## {path.stem.capitalize()}\n\n![{path.stem}]({path.name})\n" for path in written]
    (folder / "report.md").write_text("\n".join(line for line in text if line is not None))
    print(f"Wrote {folder}: report.md" + "".join(f", {path.name}" for path in written))
    return folder


def main(argv: list[str] | None = None) -> Path:
    """Entry point; an expected error ends as one line `error: ...` (errors.one_line_errors)."""
    args_list = sys.argv[1:] if argv is None else argv
    with one_line_errors(args_list):
        args = parse_arguments(
            make_parser(),
            args_list,
            f"{PROGRAM}.tools.compare",
            required=(
                "compare needs run folders: python -m lightning_diffusion.tools.compare outputs/<experiment>/version_N "
                "outputs/<experiment>/version_M ..."
            ),
        )
        return compare(
            [Path(run) for run in args.runs],
            Path(args.output_dir),
            "python -m lightning_diffusion.tools.compare " + " ".join(args_list),
        )


if __name__ == "__main__":
    main()
