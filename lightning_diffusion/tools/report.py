"""What the tools write: markdown tables (`markdown_table`), and for `evaluate` results.csv a row at a time (a
finished cell is never lost), then, once the grid is complete, results.json, results.md and the quality curves;
optionally the table and curves to W&B."""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from lightning_diffusion.loggers import WandbLogger
from lightning_diffusion.plotting import quality_curves_figure
from lightning_diffusion.runs import save_figure, write_atomically

# What a row says about its cell; the metric columns follow, then `seconds`.
CELL_COLUMNS = ["checkpoint", "run", "step", "sampler", "steps", "nfe", "guidance", "samples", "seeds"]
AXES = ("interval", "guide", "ema")  # the grid's further axes, columns after `guidance` where the grid has them
Row = dict[str, Any]


def is_floor(name: str) -> bool:
    """Floors (and the real set's accuracy) depend on the real data only: one value per cell, no spread over seeds."""
    return "_floor" in name or name.startswith("floor_") or name.endswith("accuracy_real")


def metric_columns(names: Sequence[str]) -> list[str]:
    """Each metric's mean and its standard deviation over the seeds (`<name>_std`); floors once."""
    return [column for name in names for column in ([name] if is_floor(name) else [name, f"{name}_std"])]


@contextmanager
def locked(path: Path) -> Iterator[TextIO]:
    """`path` (results.csv, made if new) open for appending under an exclusive lock (fcntl.flock), released at the
    end of the block: what evaluations of one grid at the same moment do one at a time."""
    with open(path, "a+", newline="") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield file


def append_row(path: Path, columns: list[str], row: Row, same: Callable[[Row], bool] | None = None) -> bool:
    """Appends one cell's row to results.csv (with the header if the file is new) and syncs it to disk, under an
    exclusive lock: evaluations writing one grid at once neither interleave rows nor write the header twice, and a
    row that `same` finds among the rows already there is not added again. Returns whether the row was added."""
    with locked(path) as file:
        file.seek(0)
        reader = csv.DictReader(file)
        if same is not None and any(same({k: _value(v) for k, v in other.items()}) for other in reader):
            return False
        columns = reader.fieldnames or columns  # the header another evaluation of the grid wrote first
        file.seek(0, os.SEEK_END)
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="raise")
        if not file.tell():
            writer.writeheader()
        writer.writerow({column: "" if row.get(column) is None else row[column] for column in columns})
        file.flush()
        os.fsync(file.fileno())
    return True


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


def cell(value: Any) -> str:
    """A value as a markdown table cell: a float to 4 significant digits, a list or dict as JSON, None as -."""
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, dict)):
        text = json.dumps(value)
    else:
        text = str(value)
    return text.replace("|", "\\|")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table of `rows` under `header`, each value written by `cell`."""
    lines = [[cell(name) for name in header], ["---"] * len(header), *([cell(value) for value in row] for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _mean_spread(row: Row, column: str) -> Any:
    """A metric's mean ± its standard deviation over the seeds (a floor ± the spread of its draws), where it has one."""
    value, spread = row.get(column), row.get(f"{column}_std")
    if not isinstance(value, float) or spread is None or (isinstance(spread, float) and math.isnan(spread)):
        return value
    return f"{value:.4g} ± {spread:.2g}"


def results_table(columns: list[str], rows: list[Row]) -> str:
    """The markdown table of an evaluation: one line per cell, each metric as mean ± standard deviation."""
    shown = [c for c in columns if not c.endswith("_std") and c != "checkpoint"]
    return markdown_table(shown, [[_mean_spread(row, c) for c in shown] for row in rows])


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


PLOTS = {  # file: (x axis, one line per)
    "quality_vs_nfe.png": ("nfe", ["sampler", "run", "step", "guidance"]),
    "quality_vs_guidance.png": ("guidance", ["sampler", "steps", "run", "step"]),
    "quality_vs_step.png": ("step", ["sampler", "steps", "guidance", "run"]),
    "quality_vs_ema.png": ("ema", ["sampler", "steps", "guidance", "run", "step"]),
}


def write_summaries(folder: Path, columns: list[str], rows: list[Row], meta: dict[str, Any]) -> list[Path]:
    """results.json, results.md and the plots whose axis has two values or more; returns the plots."""
    write_atomically(folder / "results.json", json.dumps({**meta, "rows": rows}, indent=2))
    plots = []
    for name, (x, lines_by) in PLOTS.items():
        title = f"{meta['experiment']}: quality against {x}"
        lines_by = [*lines_by, *(axis for axis in AXES if axis in columns and axis != x)]
        fig = quality_curves_figure(rows, plotted_metrics(columns), x, lines_by, title)
        if fig is not None:
            plots.append(save_figure(fig, folder / name))
    text = (
        f"# {meta['experiment']}: {folder.name}\n\n`{meta['command']}`\n\n{meta['details']}\n\n"
        f"{results_table(columns, rows)}\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    )
    write_atomically(folder / "results.md", text)
    return plots


def log_to_wandb(
    project: str, folder: Path, experiment: str, columns: list[str], rows: list[Row], plots: list[Path]
) -> None:
    """The results table and the plots as one W&B run in the eval folder (online with credentials, else offline)."""
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
