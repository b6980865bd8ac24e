"""How good samples are: distances of point sets with their floors, image features (FID/KID, the offline
classifier) and the validation samples that feed both."""

from lightning_diffusion.metrics.classifier import ImageClassifier
from lightning_diffusion.metrics.features import ClassifierMetrics, InceptionMetrics, SampleMetrics

__all__ = ["ClassifierMetrics", "ImageClassifier", "InceptionMetrics", "SampleMetrics"]
