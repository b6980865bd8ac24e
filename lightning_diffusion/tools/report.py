"""What `evaluate` writes: results.csv a row at a time (a finished cell is never lost), and, once the grid is
complete, results.json, results.md and the quality curves; optionally the table and curves to W&B."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lightning_diffusion.loggers import WandbLogger
from lightning_diffusion.plotting import save_figure

# What a row says about its cell; the metric columns follow, then `seconds`.
CELL_COLUMNS = ["checkpoint", "run", "step", "sampler", "steps", "nfe", "guidance", "samples", "seeds"]
Row = dict[str, Any]


def is_floor(name: str) -> bool:
    """Floors (and the real set's accuracy) depend on the real data only: one value per cell, no spread over seeds."""
    return "_floor" in name or name.startswith("floor_") or name.endswith("accuracy_real")


def metric_columns(names: Sequence[str]) -> list[str]:
    """Each metric's mean and its standard deviation over the seeds (`<name>_std`); floors once."""
    return [column for name in names for column in ([name] if is_floor(name) else [name, f"{name}_std"])]


def append_row(path: Path, columns: list[str], row: Row) -> None:
    """Appends one cell's row to results.csv (with the header if the file is new) and syncs it to disk."""
    new = not path.exists()
    with open(path, "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerow({column: "" if row.get(column) is None else row[column] for column in columns})
        file.flush()
        os.fsync(file.fileno())


def _value(text: str) -> Any:
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def read_rows(path: Path) -> tuple[list[str], list[Row]]:
    """The header and rows of a results.csv (numbers as numbers, empty cells as None); ([], []) if there is none."""
    if not path.exists():
        return [], []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows = [{key: _value(value) for key, value in row.items()} for row in reader]
        return list(reader.fieldnames or []), rows


def _format(value: Any, spread: Any = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}"
        return (
            text if spread is None or (isinstance(spread, float) and math.isnan(spread)) else f"{text} ± {spread:.2g}"
        )
    return str(value)


def markdown_table(columns: list[str], rows: list[Row]) -> str:
    """One line per cell; a metric shows as mean ± standard deviation over the seeds, a floor ± the spread of its
    independent draws (where it has several)."""
    shown = [c for c in columns if not c.endswith("_std") and c != "checkpoint"]
    lines = ["| " + " | ".join(shown) + " |", "| " + " | ".join("---" for _ in shown) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c), row.get(f"{c}_std")) for c in shown) + " |")
    return "\n".join(lines)


def plotted_metrics(columns: list[str]) -> list[tuple[str, str | None, float]]:
    """(metric, its floor column or None, constant reference line) for each curve panel: SWD as its ratio to the
    floor (reference 1), every other metric that has a floor (or, for accuracy, the real set's) beside it."""
    panels = []
    for name in columns:
        if is_floor(name) or name.endswith("_std") or name in CELL_COLUMNS or name == "seconds":
            continue
        if f"{name}_ratio" in columns:
            continue  # shown as its ratio
        if name.endswith("_ratio"):
            panels.append((name, None, 1.0))
        elif f"{name}_floor" in columns:
            panels.append((name, f"{name}_floor", math.nan))
        elif f"{name}_real" in columns:
            panels.append((name, f"{name}_real", math.nan))
    return panels


def curves_figure(rows: list[Row], columns: list[str], x: str, lines_by: list[str], title: str) -> Figure | None:
    """Each metric against `x`, one line per value of `lines_by` (mean, with the seeds' standard deviation as
    error bars), beside a dashed line at its floor; None if no line has two points."""
    varying = [key for key in lines_by if len({row.get(key) for row in rows}) > 1] or lines_by[:1]
    lines: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.get(x) is not None:
            lines.setdefault(tuple(row.get(key) for key in varying), []).append(row)
    if not any(len({row[x] for row in group}) > 1 for group in lines.values()):
        return None
    panels = plotted_metrics(columns)
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, (metric, floor, reference) in zip(axes, panels, strict=False):
        for key, group in sorted(
            lines.items(),
            key=lambda item: [(isinstance(v, str), v if not isinstance(v, str) else 0, str(v)) for v in item[0]],
        ):
            group = sorted((row for row in group if row.get(metric) is not None), key=lambda row: row[x])
            label = ", ".join(
                f"{k}={v}" if k not in ("sampler", "run") else str(v) for k, v in zip(varying, key, strict=False)
            )
            ax.errorbar(
                [row[x] for row in group],
                [row[metric] for row in group],
                yerr=[row.get(f"{metric}_std") or 0.0 for row in group],
                marker="o",
                capsize=3,
                label=label,
            )
        floors = [row[floor] for row in rows if floor and row.get(floor) is not None]
        level = float(np.mean(floors)) if floors else reference
        if not math.isnan(level):
            ax.axhline(
                level,
                color="gray",
                linestyle="--",
                linewidth=1,
                label="floor" if floor is None or "_floor" in floor else "real",
            )
        values = [row[metric] for row in rows if row.get(metric) is not None]
        if values and min(values) > 0 and max(values) > 20 * min(values):  # e.g. ratios from 1 to 30
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_title(metric, fontsize=10)
        if x == "nfe":
            ticks = sorted({row[x] for row in rows if row.get(x) is not None})
            ax.set_xscale("log")
            ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
            ax.set_xticks([], minor=True)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


PLOTS = {  # file: (x axis, one line per)
    "quality_vs_nfe.png": ("nfe", ["sampler", "run", "step", "guidance"]),
    "quality_vs_guidance.png": ("guidance", ["sampler", "steps", "run", "step"]),
    "quality_vs_step.png": ("step", ["sampler", "steps", "guidance", "run"]),
}


def write_summaries(folder: Path, columns: list[str], rows: list[Row], meta: dict[str, Any]) -> list[Path]:
    """results.json, results.md and the plots whose axis has two values or more; returns the plots."""
    (folder / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    plots = []
    for name, (x, lines_by) in PLOTS.items():
        fig = curves_figure(rows, columns, x, lines_by, f"{meta['experiment']}: quality against {x}")
        if fig is not None:
            plots.append(save_figure(fig, folder / name))
    text = (
        f"# {meta['experiment']}: {folder.name}\n\n`{meta['command']}`\n\n{meta['details']}\n\n"
        f"{markdown_table(columns, rows)}\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    )
    (folder / "results.md").write_text(text)
    return plots


def log_to_wandb(
    project: str, folder: Path, experiment: str, columns: list[str], rows: list[Row], plots: list[Path]
) -> None:
    """The results table and the plots as one W&B run (online with credentials, offline otherwise) in the eval folder."""
    logger = WandbLogger(
        project=project,
        name=f"{experiment}/{folder.name}",
        group=experiment,
        tags=[experiment, "evaluate"],
        save_dir=str(folder),
    )
    logger.log_table("evaluate/results", columns=columns, data=[[row.get(c) for c in columns] for row in rows])
    for path in plots:
        logger.log_image(f"evaluate/{path.stem}", images=[str(path)])
    logger.experiment.finish()
