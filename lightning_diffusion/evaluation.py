"""Sample-quality metrics of images: FID/KID on Inception features, and the offline classifier metrics.

Each metric compares generated images with held-out real ones in feature space, with torchmetrics' Frechet
(Heusel et al. 2017) and kernel (Binkowski et al. 2018) distances, and reports the real-vs-real floor of the same
sample size (Frechet distances are biased upwards for small samples, so only distances well above it mean
anything). Configured as `sample_metrics` of DiffusionModule (see configs/metrics/); not part of the state_dict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_diffusion.checkpoints import check_checkpoint, first_readable
from lightning_diffusion.classifier import ImageClassifier
from lightning_diffusion.runs import checkpoints_in

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_PATH = "data/weights/weights-inception-2015-12-05-6726825d.pth"


class _PrecomputedFeatures(nn.Module):
    """The 'feature extractor' of torchmetrics' FID/KID when the features are computed once, beforehand."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(x: Tensor, y: Tensor) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets (N, D): |mu_x - mu_y|^2 +
    tr(S_x + S_y - 2 (S_x S_y)^(1/2)), computed by torchmetrics in float64."""
    fid = FrechetInceptionDistance(feature=_PrecomputedFeatures(x.shape[1]), sync_on_compute=False).to(x.device)
    fid.update(x, real=True)
    fid.update(y, real=False)
    return fid.compute().float()


def kernel_distance(x: Tensor, y: Tensor, subset_size: int = 100, subsets: int = 50) -> Tensor:
    """Unbiased squared MMD with the cubic polynomial kernel (KID), averaged over random subsets, by torchmetrics."""
    kid = KernelInceptionDistance(
        feature=_PrecomputedFeatures(x.shape[1]), subsets=subsets, subset_size=min(subset_size, len(x), len(y)), sync_on_compute=False
    ).to(x.device)
    kid.update(x, real=True)
    kid.update(y, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG: keep training's untouched
        torch.manual_seed(0)
        mean, _ = kid.compute()
    return mean.float()


class SampleMetrics:
    """Scores generated images against real ones in the feature space of `_features`.

    ``evaluate`` returns the Frechet distance generated vs real (``fd``), the same between two disjoint real sets
    (``fd_floor``) and KID generated vs real (``kid``); for extractors with logits also ``accuracy`` (generated
    samples classified as the class they were asked for) and ``accuracy_real`` (on the real floor set). Each is
    logged under the name that `names` gives it.
    """

    names = {"fd": "fd", "fd_floor": "fd_floor", "kid": "kid", "accuracy": "accuracy", "accuracy_real": "accuracy_real"}

    def __init__(self, batch_size: int = 200, kid_subset_size: int = 100) -> None:
        self.batch_size = batch_size
        self.kid_subset_size = kid_subset_size

    def prepare(self) -> None:
        """Fetch what `setup` needs (called once per node before training or evaluation); may download."""

    def setup(self, device: torch.device) -> None:
        """Load the feature extractor onto `device`; raise a one-sentence error before long work if it cannot."""

    def check(self, sample_shape: tuple[int, ...], num_classes: Optional[int]) -> None:
        """One sentence if the extractor cannot score samples of this shape and classes (after `setup`)."""

    def _features(self, images: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """(features, logits or None) of images in data space [0, 1], (N, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def features(self, images: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        outputs = [self._features(chunk) for chunk in images.split(self.batch_size)]
        features = torch.cat([f for f, _ in outputs]).double()
        logits = torch.cat([l for _, l in outputs]) if outputs[0][1] is not None else None
        return features, logits

    def evaluate(
        self, generated: Tensor, real: Tensor, real_floor: Tensor, generated_labels: Optional[Tensor] = None,
        real_floor_labels: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        f_gen, logits_gen = self.features(generated)
        f_real, _ = self.features(real)
        f_floor, logits_floor = self.features(real_floor)
        metrics = {
            "fd": frechet_distance(f_real, f_gen),
            "fd_floor": frechet_distance(f_real, f_floor),
            "kid": kernel_distance(f_real, f_gen, self.kid_subset_size),
        }
        if logits_gen is not None and generated_labels is not None:
            metrics["accuracy"] = (logits_gen.argmax(1) == generated_labels).double().mean()
        if logits_floor is not None and real_floor_labels is not None:
            metrics["accuracy_real"] = (logits_floor.argmax(1) == real_floor_labels).double().mean()
        return {self.names[name]: value for name, value in metrics.items()}


class InceptionMetrics(SampleMetrics):
    """FID and KID on the 2048 pool features of the Inception-v3 of TF-FID (torch-fidelity's port, as torchmetrics).

    Logged as ``fid``, ``fid_floor`` and ``kid``. Grayscale images are repeated to RGB; all are resized to 299.

    Args:
        weights_path: The Inception weights file. If it is missing it is downloaded there from INCEPTION_URL; on a
            machine without internet, fetch that file elsewhere and put it at this path.
        batch_size: Images per Inception forward.
        kid_subset_size: Subset size of KID (at most the number of samples).
    """

    names = {"fd": "fid", "fd_floor": "fid_floor", "kid": "kid"}

    def __init__(self, weights_path: str = INCEPTION_PATH, batch_size: int = 100, kid_subset_size: int = 100) -> None:
        super().__init__(batch_size, kid_subset_size)
        self.weights_path = Path(weights_path)
        self._inception: Optional[nn.Module] = None

    def prepare(self) -> None:
        if self.weights_path.is_file():
            return
        self.weights_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.weights_path.with_suffix(f".partial{os.getpid()}")  # one per process: ranks may race
        try:
            torch.hub.download_url_to_file(INCEPTION_URL, str(partial), progress=False)
        except Exception as error:  # noqa: BLE001 - any network failure gets the same advice
            partial.unlink(missing_ok=True)
            raise ValueError(
                f"The Inception weights are not at {self.weights_path} and downloading them failed ({error}): "
                f"fetch {INCEPTION_URL} on a machine with internet and put the file at {self.weights_path}."
            ) from error
        os.replace(partial, self.weights_path)

    def setup(self, device: torch.device) -> None:
        if self._inception is None:
            if not self.weights_path.is_file():
                raise ValueError(
                    f"The Inception weights are not at {self.weights_path}: fetch {INCEPTION_URL} and put the file "
                    "there, or set weights_path."
                )
            from torchmetrics.image.fid import NoTrainInceptionV3  # needs torch-fidelity

            self._inception = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(self.weights_path)
            )
        self._inception.to(device)

    def _features(self, images: Tensor) -> tuple[Tensor, None]:
        if self._inception is None:
            self.setup(images.device)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)  # the TF-FID input convention
        return self._inception(uint8), None



class ClassifierMetrics(SampleMetrics):
    """Offline metrics from an ImageClassifier trained on the same data (configs/mnist_classifier.yaml):

    ``classifier_fd`` (Frechet distance on its features) with ``classifier_fd_floor``, ``classifier_kid``, and for
    conditional models ``classifier_accuracy``: how often a sample asked for class k is classified as k, next to
    ``classifier_accuracy_real``, the classifier's accuracy on the real floor set (the ceiling to compare with).

    Args:
        checkpoint: The classifier's checkpoint, its run folder (whose checkpoints/last.ckpt is used) or its
            experiment folder (e.g. outputs/mnist_classifier, of which the newest last.ckpt is used).
        batch_size: Images per classifier forward.
        kid_subset_size: Subset size of KID (at most the number of samples).
    """

    names = {name: f"classifier_{name}" for name in SampleMetrics.names}

    def __init__(self, checkpoint: str, batch_size: int = 500, kid_subset_size: int = 100) -> None:
        super().__init__(batch_size, kid_subset_size)
        self.checkpoint = checkpoint
        self._classifier = None

    def _checkpoint_file(self) -> Path:
        """The checkpoint that `checkpoint` names; of an experiment folder the newest readable one."""
        candidates = checkpoints_in(self.checkpoint)
        found = first_readable(candidates) if len(candidates) > 1 else next(iter(candidates), None)
        if found is None:
            raise ValueError(
                f"No classifier checkpoint at {self.checkpoint}: train one first with "
                "`python -m lightning_diffusion fit --config configs/mnist_classifier.yaml` (or the matching config) "
                "and give its checkpoint, run folder or experiment folder."
            )
        return found

    def setup(self, device: torch.device) -> None:
        if self._classifier is None:
            path = self._checkpoint_file()
            check_checkpoint(path, "ImageClassifier", needed_by="ClassifierMetrics needs")
            self._classifier = ImageClassifier.load_from_checkpoint(path, map_location="cpu").eval()
        self._classifier.to(device)

    def check(self, sample_shape: tuple[int, ...], num_classes: Optional[int]) -> None:
        """One sentence if the classifier was trained on other data than the model it scores."""
        hparams = self._classifier.hparams
        if tuple(hparams.sample_shape) != tuple(sample_shape) or (num_classes and hparams.num_classes != num_classes):
            raise ValueError(
                f"The classifier {self.checkpoint} was trained on samples of shape {tuple(hparams.sample_shape)} with "
                f"{hparams.num_classes} classes, but the model makes {tuple(sample_shape)} with {num_classes}: "
                "train a classifier on the same data."
            )

    def _features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self._classifier is None:
            self.setup(images.device)
        features = self._classifier.features(self._classifier.from_data_space(images.float()))
        return features, self._classifier.head(features)
