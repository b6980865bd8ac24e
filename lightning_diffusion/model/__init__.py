"""The LightningModule of diffusion: a denoiser trained and sampled by a formulation."""

from lightning_diffusion.model.module import DiffusionModule

__all__ = ["DiffusionModule"]
