"""Callbacks decide when to draw and write; the drawing is in plotting.py and the math in diffusion.py."""

from lightning_diffusion.callbacks.checkpointing import CheckpointOnSignal, ExactResume
from lightning_diffusion.callbacks.ema import EMA
from lightning_diffusion.callbacks.metrics_writer import MetricsWriter
from lightning_diffusion.callbacks.progress import LossProgressBar
from lightning_diffusion.callbacks.sample_grid import SampleGrid
from lightning_diffusion.callbacks.sample_plot import SamplePlot
from lightning_diffusion.callbacks.sample_writer import SampleWriter
from lightning_diffusion.callbacks.trajectory import TrajectoryPlot

__all__ = ["CheckpointOnSignal", "EMA", "ExactResume", "LossProgressBar", "MetricsWriter", "SampleGrid", "SamplePlot", "SampleWriter", "TrajectoryPlot"]
