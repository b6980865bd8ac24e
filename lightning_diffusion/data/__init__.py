"""LightningDataModules: batches ``(x,)`` or ``(x, y)`` in model space, plus what the model must agree with."""

from lightning_diffusion.data.base import DiffusionDataModule, ImageDataModule, SampleRequests
from lightning_diffusion.data.celeb import CelebFacesDataModule
from lightning_diffusion.data.folder import ImageFolderDataModule
from lightning_diffusion.data.hub import HubImageDataModule
from lightning_diffusion.data.streaming import StreamingImageDataModule
from lightning_diffusion.data.torchvision_sets import MNISTDataModule, TorchvisionDataModule
from lightning_diffusion.data.toy2d import Toy2DDataModule, make_toy2d

__all__ = [
    "CelebFacesDataModule",
    "DiffusionDataModule",
    "HubImageDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SampleRequests",
    "StreamingImageDataModule",
    "Toy2DDataModule",
    "TorchvisionDataModule",
    "make_toy2d",
]
