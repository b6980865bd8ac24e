"""Denoisers: ``forward(x_t, t, class_labels=None) -> Tensor`` with the shape of ``x_t``."""

from lightning_diffusion.denoisers.mlp import MLPDenoiser

__all__ = ["MLPDenoiser"]
