"""lightning-diffusion: diffusion-model experiments from one YAML, on PyTorch Lightning and diffusers."""

from lightning_diffusion.metrics.classifier import ImageClassifier
from lightning_diffusion.model import DiffusionModule

__all__ = ["DiffusionModule", "ImageClassifier"]
__version__ = "0.1.0"
