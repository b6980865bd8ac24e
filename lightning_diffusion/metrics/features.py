"""Sample-quality metrics of images: FID/KID on Inception features, and the offline classifier metrics.

Each metric compares generated images with held-out real ones in feature space, with the Frechet (Heusel et al.
2017) and torchmetrics' kernel (Binkowski et al. 2018) distances, and reports the real-vs-real floor of the same
sample size (Frechet distances are biased upwards for small samples, so only distances well above it mean
anything). Configured as `sample_metrics` of DiffusionModule (see configs/metrics/); not part of the state_dict.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_diffusion.checkpoints import check_checkpoint, checkpoint_named
from lightning_diffusion.metrics.classifier import ImageClassifier

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_PATH = "data/weights/weights-inception-2015-12-05-6726825d.pth"


class FeatureStats:
    """One image set in a metric's feature space, accumulated batch by batch so that no set is ever held whole:
    the sums of the Frechet distance (sum f, sum f f^T and the count, in float64), the first `kid_max_samples`
    features for KID (which scores random subsets of them), and the hits of the class-conditional accuracy."""

    def __init__(self, kid_max_samples: int = 10_000) -> None:
        self.kid_max_samples = kid_max_samples
        self.count = 0
        self.sum: Tensor | None = None
        self.outer_sum: Tensor | None = None
        self.kid_features: list[Tensor] = []
        self.hits, self.labelled = 0, 0

    def add(self, features: Tensor, logits: Tensor | None = None, labels: Tensor | None = None) -> None:
        features = features.double()
        if self.sum is None:
            self.sum = features.new_zeros(features.shape[1])
            self.outer_sum = features.new_zeros(features.shape[1], features.shape[1])
        self.sum += features.sum(0)
        self.outer_sum += features.T @ features
        kept = sum(len(f) for f in self.kid_features)
        if kept < self.kid_max_samples:
            self.kid_features.append(features[: self.kid_max_samples - kept].cpu())
        self.count += len(features)
        if logits is not None and labels is not None:
            self.hits += int((logits.argmax(1) == labels.to(logits.device)).sum())
            self.labelled += len(labels)

    def moments(self) -> tuple[Tensor, Tensor]:
        """The mean and the unbiased covariance of the features."""
        if self.count < 2:
            raise ValueError(
                f"A Frechet distance needs at least 2 samples in each set, got {self.count}: use more samples."
            )
        mean = self.sum / self.count
        return mean, (self.outer_sum - self.count * torch.outer(mean, mean)) / (self.count - 1)

    def accuracy(self) -> Tensor | None:
        return torch.tensor(self.hits / self.labelled, dtype=torch.float64) if self.labelled else None


def frechet_distance_of(x: FeatureStats, y: FeatureStats) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
    |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)), in float64, with tr((S_x S_y)^(1/2)) the sum of the square
    roots of the eigenvalues of S_x S_y (as torchmetrics)."""
    (mu_x, s_x), (mu_y, s_y) = x.moments(), y.moments()
    s_y = s_y.to(s_x.device)
    root_trace = torch.linalg.eigvals(s_x @ s_y).sqrt().real.sum()
    return ((mu_x - mu_y.to(mu_x.device)).square().sum() + s_x.trace() + s_y.trace() - 2 * root_trace).float()


def frechet_distance(x: Tensor, y: Tensor) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) (frechet_distance_of)."""
    stats_x, stats_y = FeatureStats(0), FeatureStats(0)
    stats_x.add(x)
    stats_y.add(y)
    return frechet_distance_of(stats_x, stats_y)


def kernel_distance(x: Tensor, y: Tensor, subset_size: int = 100, subsets: int = 50) -> Tensor:
    """Unbiased squared MMD with the cubic polynomial kernel (KID), averaged over random subsets, by torchmetrics."""
    kid = KernelInceptionDistance(
        feature=nn.Identity(),  # the features are computed beforehand
        subsets=subsets,
        subset_size=min(subset_size, len(x), len(y)),
        sync_on_compute=False,
    ).to(x.device)
    kid.update(x, real=True)
    kid.update(y.to(x.device), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG: keep training's untouched
        torch.manual_seed(0)
        mean, _ = kid.compute()
    return mean.float()


class SampleMetrics:
    """Scores generated images against real ones in the feature space of `_features`.

    ``evaluate`` returns the Frechet distance generated vs real (``fd``), the same between two disjoint real sets
    (``fd_floor``), KID generated vs real (``kid``) and its floor (``kid_floor``); for extractors with logits also
    ``accuracy`` (generated samples classified as the class they were asked for) and ``accuracy_real`` (on the real
    floor set). Each is logged under the name that `names` gives it. The sets stream through `accumulate` a batch
    at a time (FeatureStats), so `evaluate` holds features, never more images than one batch.
    """

    names = {name: name for name in ("fd", "fd_floor", "kid", "kid_floor", "accuracy", "accuracy_real")}

    def __init__(self, batch_size: int = 200, kid_subset_size: int = 100, kid_max_samples: int = 10_000) -> None:
        self.batch_size = batch_size
        self.kid_subset_size = kid_subset_size
        self.kid_max_samples = kid_max_samples

    def prepare(self) -> None:
        """Fetch what `setup` needs (called once per node before training or evaluation); may download."""

    def setup(self, device: torch.device) -> None:
        """Load the feature extractor onto `device`; raise a one-sentence error before long work if it cannot."""

    def check(self, sample_shape: tuple[int, ...], num_classes: int | None) -> None:
        """One sentence if the extractor cannot score samples of this shape and classes (after `setup`)."""

    def _features(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features, logits or None) of images in data space [0, 1], (N, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def accumulate(
        self, images: Tensor, labels: Tensor | None = None, stats: FeatureStats | None = None
    ) -> FeatureStats:
        """Adds images in data space (N, C, H, W), `batch_size` at a time, and their asked-for `labels` to `stats`
        (a new FeatureStats if None), which it returns."""
        stats = FeatureStats(self.kid_max_samples) if stats is None else stats
        for start in range(0, len(images), self.batch_size):
            features, logits = self._features(images[start : start + self.batch_size])
            stats.add(features, logits, None if labels is None else labels[start : start + self.batch_size])
        return stats

    def scores(self, generated: FeatureStats, real: FeatureStats, real_floor: FeatureStats) -> dict[str, Tensor]:
        """The metrics of the generated set against the real one, and their floors (the real floor set's)."""
        kid = lambda x: kernel_distance(torch.cat(real.kid_features), torch.cat(x.kid_features), self.kid_subset_size)  # noqa: E731
        metrics = {
            "fd": frechet_distance_of(real, generated),
            "fd_floor": frechet_distance_of(real, real_floor),
            "kid": kid(generated),
            "kid_floor": kid(real_floor),
            "accuracy": generated.accuracy(),
            "accuracy_real": real_floor.accuracy(),
        }
        return {self.names[name]: value for name, value in metrics.items() if value is not None and name in self.names}

    def evaluate(
        self,
        generated: Tensor,
        real: Tensor,
        real_floor: Tensor,
        generated_labels: Tensor | None = None,
        real_floor_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        return self.scores(
            self.accumulate(generated, generated_labels),
            self.accumulate(real),
            self.accumulate(real_floor, real_floor_labels),
        )


class InceptionMetrics(SampleMetrics):
    """FID and KID on the 2048 pool features of the Inception-v3 of TF-FID (torch-fidelity's port, as torchmetrics).

    Logged as ``fid``, ``fid_floor``, ``kid`` and ``kid_floor``. Grayscale images are repeated to RGB; all are
    resized to 299.

    Args:
        weights_path: The Inception weights file. If it is missing it is downloaded there from INCEPTION_URL; on a
            machine without internet, fetch that file elsewhere and put it at this path.
        batch_size: Images per Inception forward.
        kid_subset_size: Subset size of KID (at most the number of samples).
        kid_max_samples: Features kept per set for KID (its subsets are drawn from them).
    """

    names = {"fd": "fid", "fd_floor": "fid_floor", "kid": "kid", "kid_floor": "kid_floor"}

    def __init__(
        self,
        weights_path: str = INCEPTION_PATH,
        batch_size: int = 100,
        kid_subset_size: int = 100,
        kid_max_samples: int = 10_000,
    ) -> None:
        super().__init__(batch_size, kid_subset_size, kid_max_samples)
        self.weights_path = Path(weights_path)
        self._inception: nn.Module | None = None

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
                name="inception-v3-compat",
                features_list=["2048"],
                feature_extractor_weights_path=str(self.weights_path),
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

    ``classifier_fd`` (Frechet distance on its features) with ``classifier_fd_floor``, ``classifier_kid`` with
    ``classifier_kid_floor``, and for conditional models ``classifier_accuracy``: how often a sample asked for
    class k is classified as k, next to ``classifier_accuracy_real``, the classifier's accuracy on the real floor
    set (the ceiling to compare with).

    Args:
        checkpoint: The classifier's checkpoint, its run folder (whose checkpoints/last.ckpt is used) or its
            experiment folder (e.g. outputs/mnist_classifier, of which the newest last.ckpt is used).
        batch_size: Images per classifier forward.
        kid_subset_size: Subset size of KID (at most the number of samples).
        kid_max_samples: Features kept per set for KID (its subsets are drawn from them).
    """

    names = {name: f"classifier_{name}" for name in SampleMetrics.names}

    def __init__(
        self, checkpoint: str, batch_size: int = 500, kid_subset_size: int = 100, kid_max_samples: int = 10_000
    ) -> None:
        super().__init__(batch_size, kid_subset_size, kid_max_samples)
        self.checkpoint = checkpoint
        self._classifier = None

    def _checkpoint_file(self) -> Path:
        """The checkpoint that `checkpoint` names (of an experiment folder the newest readable one)."""
        found = checkpoint_named(self.checkpoint)
        if found is None:
            raise ValueError(
                f"No classifier checkpoint at {self.checkpoint}: train one first with `python -m lightning_diffusion "
                "fit --config configs/mnist_classifier.yaml` (or the matching config) and give its checkpoint, run "
                "folder or experiment folder."
            )
        return found

    def setup(self, device: torch.device) -> None:
        if self._classifier is None:
            path = self._checkpoint_file()
            check_checkpoint(path, "ImageClassifier", needed_by="ClassifierMetrics needs")
            self._classifier = ImageClassifier.load_from_checkpoint(path, map_location="cpu").eval()
        self._classifier.to(device)

    def check(self, sample_shape: tuple[int, ...], num_classes: int | None) -> None:
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
