"""Callbacks decide when to draw, write and save; the drawing is in plotting.py and the math in formulations/."""

from lightning_diffusion.callbacks.ema import EMA
from lightning_diffusion.callbacks.lost_rank import LostRank
from lightning_diffusion.callbacks.posthoc_ema import PostHocEMA
from lightning_diffusion.callbacks.progress import LossProgressBar
from lightning_diffusion.callbacks.resume import ExactResume
from lightning_diffusion.callbacks.sample_grid import SampleGrid
from lightning_diffusion.callbacks.sample_plot import SamplePlot
from lightning_diffusion.callbacks.signals import CheckpointOnSignal
from lightning_diffusion.callbacks.summary import RunSummary
from lightning_diffusion.callbacks.trajectory import TrajectoryPlot
from lightning_diffusion.callbacks.writers import MetricsWriter, SampleWriter

__all__ = [
    "CheckpointOnSignal",
    "EMA",
    "ExactResume",
    "LossProgressBar",
    "LostRank",
    "MetricsWriter",
    "PostHocEMA",
    "RunSummary",
    "SampleGrid",
    "SamplePlot",
    "SampleWriter",
    "TrajectoryPlot",
]
