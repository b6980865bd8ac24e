"""lightning-diffusion: diffusion-model experiments from one YAML, on PyTorch Lightning and diffusers."""

from lightning_diffusion.classifier import ImageClassifier
from lightning_diffusion.module import DiffusionModule

__all__ = ["DiffusionModule", "ImageClassifier"]
__version__ = "0.1.0"
