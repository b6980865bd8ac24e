"""Pure plotting: tensors and numbers in, matplotlib Figures out. No Lightning here, and no files (runs.save_figure
writes them).

Figures are built with `matplotlib.figure.Figure` (not pyplot), so nothing depends on a display or a global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

REAL_COLOR, GENERATED_COLOR, TRACKED_COLOR = "tab:blue", "tab:orange", "tab:green"


def _np(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def scatter_figure(real: Tensor, generated: Tensor, title: str = "") -> Figure:
    """Generated (N, 2) against real (M, 2) points, side by side and overlaid on the same axes limits."""
    real, generated = _np(real), _np(generated)
    both = np.concatenate([real, generated])
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    for ax, (name, points, color) in zip(
        axes,
        [("real", real, REAL_COLOR), ("generated", generated, GENERATED_COLOR), ("overlay", None, None)],
        strict=False,
    ):
        if points is None:
            ax.scatter(real[:, 0], real[:, 1], s=2, c=REAL_COLOR, alpha=0.4, label="real")
            ax.scatter(generated[:, 0], generated[:, 1], s=2, c=GENERATED_COLOR, alpha=0.4, label="generated")
            ax.legend(loc="upper right", markerscale=4, fontsize=7)
        else:
            ax.scatter(points[:, 0], points[:, 1], s=2, c=color, alpha=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal", adjustable="box")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def trajectory_figure(
    forward: Sequence[tuple[int, Tensor]],
    reverse: Sequence[tuple[int, Tensor]],
    tracked_index: int = 0,
    title: str = "",
    limit: float = 3.5,
) -> Figure:
    """Two rows of 2D clouds: the forward noising q(x_t | x0) and the reverse denoising, with one point in green.

    `forward` and `reverse` are lists of (timestep, points (N, 2)); the same `tracked_index` is drawn in every panel.
    """
    columns = max(len(forward), len(reverse))
    fig = Figure(figsize=(1.8 * columns, 4.0), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2, columns, sharex=True, sharey=True, squeeze=False))
    for row, (name, frames) in enumerate([("forward", forward), ("reverse", reverse)]):
        for col in range(columns):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_aspect("equal")
            if col >= len(frames):
                ax.axis("off")
                continue
            t, points = frames[col]
            points = _np(points)
            ax.scatter(points[:, 0], points[:, 1], s=1, c=REAL_COLOR if row == 0 else GENERATED_COLOR, alpha=0.4)
            ax.scatter(*points[tracked_index], s=40, c=TRACKED_COLOR, edgecolors="black", linewidths=0.5, zorder=3)
            ax.set_title(f"{name} t={int(t)}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def evenly_spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), both ends included."""
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def image_grid(images: Tensor, nrow: int, padding: int = 2) -> Tensor:
    """Images (N, C, H, W) in [0, 1] -> one (C, H', W') grid with `nrow` images per row (rows: N / nrow)."""
    return make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=padding, pad_value=1.0)


def progression_figure(frames: Sequence[tuple[float, Tensor, Tensor]], title: str = "") -> Figure:
    """The denoising progression of a few images: for each (t, x_t, x0_pred) a column; for each image two rows,
    the sample x_t and the prediction of x0 at that step (all in [0, 1], (K, C, H, W))."""
    num_images, columns = frames[0][1].shape[0], len(frames)
    fig = Figure(figsize=(1.2 * columns, 1.25 * 2 * num_images + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(2 * num_images, columns, squeeze=False))
    for col, (t, x_t, x0_pred) in enumerate(frames):
        for k in range(num_images):
            for row, (name, images) in enumerate([("x_t", x_t), ("x0_pred", x0_pred)]):
                ax = axes[2 * k + row, col]
                image = images[k].detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy()
                ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == 0 and row == 0:
                    ax.set_title(f"t={float(t):.3g}", fontsize=8)  # the timestep, sigma or flow time
                if col == 0:
                    ax.set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def training_curves_figure(
    curves: Sequence[dict[str, list[tuple[float, float]]]], labels: Sequence[str]
) -> Figure | None:
    """Logged metrics against the training step: one panel per metric (the train metrics first; the floors'
    spreads left out), one line per run of `curves` ({metric: [(step, value), ...]} each); None without metrics."""
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


def quality_curves_figure(
    rows: Sequence[dict[str, Any]],
    panels: Sequence[tuple[str, str | None, float]],
    x: str,
    lines_by: Sequence[str],
    title: str,
) -> Figure | None:
    """Sample-quality metrics against `x` (NFE, guidance or training step) from an evaluation's rows: a panel per
    (metric, its floor column or None, a constant reference line) of `panels`, one line per value of the `lines_by`
    keys that vary (the mean, the seeds' standard deviation `<metric>_std` as error bars), a dashed line at the
    floor; None if no line has two points."""
    varying = [key for key in lines_by if len({row.get(key) for row in rows}) > 1] or list(lines_by[:1])
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get(x) is not None:
            lines.setdefault(tuple(row.get(key) for key in varying), []).append(row)
    if not any(len({row[x] for row in group}) > 1 for group in lines.values()):
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    for ax, (metric, floor, reference) in zip(axes, panels, strict=False):
        for key, group in sorted(
            lines.items(),
            key=lambda item: [
                (v is None, isinstance(v, str), v if isinstance(v, (int, float)) else 0, str(v)) for v in item[0]
            ],
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
            label = "floor" if floor is None or "_floor" in floor else "real"
            ax.axhline(level, color="gray", linestyle="--", linewidth=1, label=label)
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
