"""Denoisers: ``forward(x_t, t, class_labels=None) -> Tensor`` with the shape of ``x_t``.

Constructors take ``sample_shape`` and ``num_classes``, which the CLI links from the data.
"""

from lightning_diffusion.denoisers.dit import DiTDenoiser
from lightning_diffusion.denoisers.mlp import MLPDenoiser
from lightning_diffusion.denoisers.unet import UNetDenoiser

__all__ = ["DiTDenoiser", "MLPDenoiser", "UNetDenoiser"]
