"""Sample-quality metrics of images: FID/KID on Inception features, and the offline classifier metrics.

Each metric compares generated images with held-out real ones in feature space, with torchmetrics' Frechet (Heusel
et al. 2017) and kernel (Binkowski et al. 2018) distances, and reports the real-vs-real floor of the same
sample size (Frechet distances are biased upwards for small samples, so only distances well above it mean
anything). Configured as `sample_metrics` of DiffusionModule (see configs/metrics/); not part of the state_dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_diffusion.checkpoints import check_checkpoint, checkpoint_named
from lightning_diffusion.metrics.classifier import ImageClassifier

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_PATH = "data/weights/weights-inception-2015-12-05-6726825d.pth"


class GivenFeatures(nn.Identity):
    """The `feature` module of torchmetrics' image metrics for features computed beforehand: passes them through and
    gives their number as `num_features`, which the metrics read."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


def frechet_metric(num_features: int) -> FrechetInceptionDistance:
    """torchmetrics' Frechet distance between Gaussians fitted to two sets of features (N, num_features) (Heusel et
    al. 2017): |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)) of their means and unbiased covariances, from the
    float64 sums of f and f f^T of the real set and of the generated one, streamed by `update`. `reset` drops only
    the generated set; each rank computes on its own sums."""
    given = GivenFeatures(num_features)
    return FrechetInceptionDistance(feature=given, reset_real_features=False, sync_on_compute=False)


def frechet_of(metric: FrechetInceptionDistance | None) -> Tensor:
    """The Frechet distance of a frechet_metric (None: no features yet), in float32."""
    count = 0 if metric is None else int(min(metric.real_features_num_samples, metric.fake_features_num_samples))
    if count < 2:
        raise ValueError(f"A Frechet distance needs at least 2 samples in each set, got {count}: use more samples.")
    return metric.compute().float()


def frechet_distance(x: Tensor, y: Tensor) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) (frechet_metric)."""
    metric = frechet_metric(x.shape[1]).to(x.device)
    metric.update(x, real=True)
    metric.update(y.to(x.device), real=False)
    return frechet_of(metric)


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


class Comparison:
    """Generated image sets, one at a time, against a real set in a SampleMetrics' feature space, streamed a batch at
    a time (no set is held whole): both sets' Frechet sums in a frechet_metric (`reset` drops the generated set's),
    the first `kid_max_samples` features of each for KID, the generated set's class hits, and the floor's scores."""

    def __init__(self, metric: SampleMetrics) -> None:
        self.metric = metric
        self.frechet: FrechetInceptionDistance | None = None  # built on the first batch, which gives the feature count
        self.kept: dict[bool, list[Tensor]] = {True: [], False: []}  # KID's features of the real and generated sets
        self.hits, self.labelled = 0, 0
        self.floor: dict[str, Tensor | None] = {}

    @torch.no_grad()
    def add(self, images: Tensor, labels: Tensor | None = None, real: bool = False) -> None:
        """Adds images in data space (N, C, H, W), `batch_size` at a time, to the real set or to the generated one,
        with the classes they were asked for (`labels`)."""
        size = self.metric.batch_size
        for start in range(0, len(images), size):
            features, logits = self.metric._features(images[start : start + size])
            if self.frechet is None:
                self.frechet = frechet_metric(features.shape[1]).to(features.device)
            self.frechet.update(features, real=real)
            room = self.metric.kid_max_samples - sum(len(f) for f in self.kept[real])
            if room > 0:
                self.kept[real].append(features[:room].double().cpu())
            if logits is not None and labels is not None:
                self.hits += int((logits.argmax(1) == labels[start : start + size].to(logits.device)).sum())
                self.labelled += len(features)

    def reset(self) -> None:
        """Drops the generated set; the real one stays."""
        if self.frechet is not None:
            self.frechet.reset()
        self.kept[False], self.hits, self.labelled = [], 0, 0

    def _generated(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """The Frechet distance, KID and class-conditional accuracy of the generated set."""
        kid = kernel_distance(torch.cat(self.kept[True]), torch.cat(self.kept[False]), self.metric.kid_subset_size)
        accuracy = torch.tensor(self.hits / self.labelled, dtype=torch.float64) if self.labelled else None
        return frechet_of(self.frechet), kid, accuracy

    def score_floor(self) -> None:
        """Scores the generated set as the floor (a real set disjoint from the real one), then drops it."""
        self.floor = dict(zip(("fd_floor", "kid_floor", "accuracy_real"), self._generated(), strict=True))
        self.reset()

    def scores(self) -> dict[str, Tensor]:
        """The metrics of the generated set against the real one, and the floor's, under the metric's names."""
        metrics = dict(zip(("fd", "kid", "accuracy"), self._generated(), strict=True)) | self.floor
        return {name: metrics[k] for k, name in self.metric.names.items() if metrics.get(k) is not None}


class SampleMetrics:
    """Scores generated images against real ones in the feature space of `_features`.

    ``evaluate`` returns the Frechet distance generated vs real (``fd``), the same between two disjoint real sets
    (``fd_floor``), KID generated vs real (``kid``) and its floor (``kid_floor``); for extractors with logits also
    ``accuracy`` (generated samples classified as the class they were asked for) and ``accuracy_real`` (on the real
    floor set). Each is logged under the name that `names` gives it. The sets stream through a Comparison a batch
    at a time, so `evaluate` holds features, never more images than one batch.
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

    def evaluate(
        self,
        generated: Tensor,
        real: Tensor,
        real_floor: Tensor,
        generated_labels: Tensor | None = None,
        real_floor_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        comparison = Comparison(self)
        comparison.add(real, real=True)
        comparison.add(real_floor, real_floor_labels)
        comparison.score_floor()
        comparison.add(generated, generated_labels)
        return comparison.scores()


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
        try:  # torch.hub downloads to a temporary file of its own beside the target, then renames it
            torch.hub.download_url_to_file(INCEPTION_URL, str(self.weights_path), progress=False)
        except Exception as error:  # noqa: BLE001 - any network failure gets the same advice
            raise ValueError(
                f"The Inception weights are not at {self.weights_path} and downloading them failed ({error}): "
                f"fetch {INCEPTION_URL} on a machine with internet and put the file at {self.weights_path}."
            ) from error

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
