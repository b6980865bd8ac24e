"""DiffusionModule: a pluggable denoiser trained against a pluggable diffusers noise schedule."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Literal, Optional, Sequence, Union

import diffusers
import lightning as L
import torch
from diffusers import SchedulerMixin
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_diffusion import diffusion
from lightning_diffusion.diffusion import LossWeighting, PredictionType, StepCallback
from lightning_diffusion.evaluation import SampleMetrics
from lightning_diffusion.metrics import mmd_rbf, sliced_wasserstein

Batch = Union[Tensor, Sequence[Tensor], dict]


def sampler_class(name: str) -> type[SchedulerMixin]:
    """The diffusers scheduler class called `name`, or a one-sentence error."""
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(
            f"Unknown sampler {name!r}: use a diffusers scheduler class name such as DDPMScheduler, DDIMScheduler, "
            "DPMSolverMultistepScheduler, EulerDiscreteScheduler or UniPCMultistepScheduler."
        )
    return cls


class _Factory:
    """An optimizer or LR-scheduler factory that deep copies of the module (EMA's AveragedModel) share: the
    partials jsonargparse builds reference the CLI itself, and under DDP its locks, which cannot be copied."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> "_Factory":
        return self


def configure_optimizers(module: L.LightningModule) -> Any:
    """The optimizer of `module.optimizer_fn` and, if any, the LR scheduler of `module.lr_scheduler_fn`, stepped
    every `lr_scheduler_interval` (a hyperparameter)."""
    optimizer = module.optimizer_fn(module.parameters())
    if module.lr_scheduler_fn is None:
        return optimizer
    scheduler = module.lr_scheduler_fn(optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": module.hparams.lr_scheduler_interval}}


class DiffusionModule(L.LightningModule):
    """Trains a denoiser on the forward process of a diffusers scheduler and samples with any diffusers sampler.

    Args:
        denoiser: The network, ``forward(x_t, t, class_labels=None)``; it predicts what ``prediction_type`` says.
        scheduler: The noise schedule of training (a diffusers scheduler with ``alphas_cumprod``, e.g.
            DDPMScheduler); its own ``prediction_type`` is ignored in favour of this module's.
        prediction_type: The training target: ``epsilon`` (Ho et al. 2020), ``sample`` (x0) or ``v_prediction``
            (Salimans & Ho 2022).
        loss_weighting: ``uniform`` (the simple loss) or ``min_snr`` (Hang et al. 2023).
        min_snr_gamma: The gamma of min-SNR weighting.
        sampler: Class name of the diffusers scheduler used for generation, built fresh from the training
            scheduler's config for every call (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, ...).
        sampler_kwargs: Extra config of the sampler, e.g. ``{timestep_spacing: trailing}``.
        num_inference_steps: Sampling steps.
        guidance_scale: Classifier-free guidance scale at sampling (1: conditional, 0: unconditional).
        label_dropout: Probability of replacing a label by the null label in training (classifier-free guidance).
        optimizer: Optimizer, given the parameters.
        lr_scheduler: Learning-rate scheduler, given the optimizer (``None``: constant).
        lr_scheduler_interval: Step the learning-rate scheduler every ``step`` or every ``epoch``.
        val_num_samples: Samples generated at the end of each validation and test (summed over devices) to compute
            ``<stage>/swd`` (sliced Wasserstein) and ``<stage>/mmd`` (squared MMD, Gaussian kernel of bandwidth 1)
            against as many held-out samples, with their real-vs-real floors ``<stage>/swd_floor`` and
            ``<stage>/mmd_floor``, and the ``sample_metrics`` (0: off). Needs 2x as many held-out samples.
        sample_metrics: Feature-space metrics of images, e.g. ``InceptionMetrics`` (FID, KID) and
            ``ClassifierMetrics`` (offline Frechet distance and class-conditional accuracy); see configs/metrics/.
        sample_batch_size: Samples generated per batch for the metrics (``None``: all at once).
        sample_seed: Seed of the noise of validation samples and ``predict``, so that results are comparable.
        compile: Train through ``torch.compile(denoiser)``; the weights keep their names, so checkpoints load
            with or without it. Sampling runs the plain denoiser.
        sample_shape: Shape of one sample; linked from the data by the CLI.
        num_classes: Number of classes of a conditional model (``None``: unconditional); linked from the data.
        class_names: Names of the classes, recorded for plots, logs and exports; linked from the data.
        data_mean: Per-channel mean that maps model space to data space (x * std + mean); linked from the data.
        data_std: Per-channel standard deviation, likewise.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        scheduler: SchedulerMixin,
        prediction_type: PredictionType = "epsilon",
        loss_weighting: LossWeighting = "uniform",
        min_snr_gamma: float = 5.0,
        sampler: str = "DDPMScheduler",
        sampler_kwargs: Optional[dict[str, Any]] = None,
        num_inference_steps: int = 1000,
        guidance_scale: float = 1.0,
        label_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "epoch",
        val_num_samples: int = 0,
        sample_metrics: Optional[list[SampleMetrics]] = None,
        sample_batch_size: Optional[int] = None,
        sample_seed: int = 0,
        compile: bool = False,
        sample_shape: tuple[int, ...] = (2,),
        num_classes: Optional[int] = None,
        class_names: Optional[list[str]] = None,
        data_mean: Optional[list[float]] = None,
        data_std: Optional[list[float]] = None,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # objects given from Python are dropped just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        # Built in Python rather than by the CLI: the objects themselves are not hyperparameters (the weights are in
        # the state_dict); load such a checkpoint with load_from_checkpoint(path, denoiser=..., scheduler=...).
        for name in ("denoiser", "scheduler", "optimizer", "lr_scheduler"):
            if not isinstance(self.hparams.get(name), (dict, type(None))):
                self.hparams.pop(name)
        if not all(isinstance(metric, dict) for metric in self.hparams.get("sample_metrics") or []):
            self.hparams.pop("sample_metrics")

        if getattr(scheduler, "alphas_cumprod", None) is None:
            raise ValueError(
                f"The training scheduler {type(scheduler).__name__} has no alphas_cumprod: use a DDPM-family "
                "scheduler such as DDPMScheduler for training and choose the sampler with `sampler`."
            )
        self._sampler_class = sampler_class(sampler)
        num_train_timesteps = scheduler.config.num_train_timesteps
        if not 0 < num_inference_steps <= num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}.")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}.")
        denoiser_classes = getattr(denoiser, "num_classes", num_classes)
        if denoiser_classes != num_classes:
            raise ValueError(
                f"The denoiser has num_classes={denoiser_classes} but the data has {num_classes}: "
                "let the CLI link them, or pass the same value to both."
            )
        if guidance_scale != 1.0 and not num_classes:
            raise ValueError(f"guidance_scale={guidance_scale} needs a conditional model (the data has no classes).")

        if sample_metrics and len(sample_shape) != 3:
            raise ValueError(f"sample_metrics score images (C, H, W), but the samples have shape {tuple(sample_shape)}.")
        if sample_metrics and not val_num_samples:
            raise ValueError("sample_metrics are computed on val_num_samples samples: set val_num_samples (e.g. 1000).")
        if sample_batch_size is not None and sample_batch_size < 1:
            raise ValueError(f"sample_batch_size must be positive (or null for all at once), got {sample_batch_size}.")

        if guidance_scale != 1.0 and label_dropout == 0.0:
            rank_zero_warn("guidance_scale != 1 with label_dropout = 0: the null label is never trained, so guidance is noise.")

        self.denoiser = denoiser
        self.scheduler = scheduler
        self.optimizer_fn = _Factory(optimizer)
        self.lr_scheduler_fn = _Factory(lr_scheduler) if lr_scheduler is not None else None
        self.prediction_type = prediction_type
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        self.class_names = class_names
        self.sample_metrics = list(sample_metrics or [])  # a plain list: their networks stay out of the state_dict
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.float().clone(), persistent=False)
        stats_shape = (1, -1, *([1] * (len(self.sample_shape) - 1)))  # broadcasts over (B, C, ...) or (B, D)
        mean = torch.tensor(data_mean if data_mean is not None else [0.0]).view(stats_shape)
        std = torch.tensor(data_std if data_std is not None else [1.0]).view(stats_shape)
        self.register_buffer("data_mean", mean, persistent=False)
        self.register_buffer("data_std", std, persistent=False)
        object.__setattr__(self, "_train_denoiser", denoiser)  # not a submodule: torch.compile may replace it in setup
        self._val_points: list[Tensor] = []
        self._val_labels: list[Tensor] = []

    # ---------------------------------------------------------------- sampling

    def make_sampler(self, name: Optional[str] = None) -> SchedulerMixin:
        """A fresh sampler from the training scheduler's config, so the betas always agree.

        Samplers keep the training scheduler's clipping of x0 to [-1, 1] (`clip_sample`, the image range): those
        without a `clip_sample` option (DPM-Solver, UniPC) get it as thresholding capped at 1, which is that clip.
        Unclipped, their x0 predictions of an eps-model at high noise leave the pixel range far behind.
        """
        cls = sampler_class(name) if name is not None else self._sampler_class
        config, options = self.scheduler.config, inspect.signature(cls.__init__).parameters
        clip = (
            config.get("clip_sample") and config.get("clip_sample_range", 1.0) == 1.0
            and "clip_sample" not in options and "thresholding" in options
            and len(self.sample_shape) > 1  # diffusers thresholds (C, H, W) samples only
        )
        kwargs = {"thresholding": True, "sample_max_value": 1.0} if clip else {}
        kwargs.update({**(self.hparams.sampler_kwargs or {}), "prediction_type": self.prediction_type})
        return cls.from_config(config, **kwargs)

    def to_data_space(self, x: Tensor) -> Tensor:
        return x * self.data_std + self.data_mean

    def _class_labels(self, num_samples: int, class_labels: Union[None, int, Sequence[int], Tensor]) -> Optional[Tensor]:
        if not self.num_classes:
            if class_labels is not None:
                raise ValueError("class_labels were given but the model is unconditional (num_classes is None).")
            return None
        if class_labels is None:  # every class in turn
            return torch.arange(num_samples, device=self.device) % self.num_classes
        labels = torch.as_tensor(class_labels, device=self.device).long().flatten()
        labels = labels.expand(num_samples) if labels.numel() == 1 else labels
        if labels.numel() != num_samples or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"class_labels must be {num_samples} labels (or one) in [0, {self.num_classes - 1}], "
                f"got {labels.numel()} in [{labels.min().item()}, {labels.max().item()}]."
            )
        return labels

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        class_labels: Union[None, int, Sequence[int], Tensor] = None,
        num_inference_steps: Optional[int] = None,
        sampler: Optional[str] = None,
        generator: Optional[torch.Generator] = None,
        guidance_scale: Optional[float] = None,
        callback: Optional[StepCallback] = None,
        data_space: bool = True,
        noise: Optional[Tensor] = None,
    ) -> Tensor:
        """Generate `num_samples` samples (in data space unless `data_space=False`).

        `sampler`, `num_inference_steps` and `guidance_scale` override the configured ones for this call;
        `generator` (a CPU generator) makes the result reproducible, as does a given x_T `noise`; conditional
        models without `class_labels` cycle through the classes. `callback(i, t, x_t, x0_pred)` sees every step.
        """
        labels = self._class_labels(num_samples, class_labels)
        if noise is None:
            noise = torch.randn((num_samples, *self.sample_shape), generator=generator)
        noise = noise.to(self.device)
        was_training = self.training
        self.eval()
        try:
            x0 = diffusion.sample(
                self.denoiser,
                self.make_sampler(sampler),
                noise,
                num_inference_steps or self.hparams.num_inference_steps,
                class_labels=labels,
                guidance_scale=self.hparams.guidance_scale if guidance_scale is None else guidance_scale,
                null_label=self.num_classes,
                generator=generator,
                callback=callback,
            )
        finally:
            self.train(was_training)
        return self.to_data_space(x0) if data_space else x0

    # ---------------------------------------------------------------- training

    def prepare_data(self) -> None:
        for metric in self.sample_metrics:  # downloads, once per node
            metric.prepare()

    def load_sample_metrics(self, device: torch.device) -> None:
        """Loads the metrics' feature extractors onto `device` and checks they fit this model's samples (each once;
        later calls only move them): a missing or mismatched file is one sentence before training."""
        for metric in self.sample_metrics:
            metric.setup(device)
            metric.check(self.sample_shape, self.num_classes)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate", "test"):
            self.load_sample_metrics(self.device)
        if stage == "fit" and self.hparams.compile and self._train_denoiser is self.denoiser:
            # held outside the module tree, so that the state_dict has no "_orig_mod." names
            object.__setattr__(self, "_train_denoiser", torch.compile(self.denoiser))

    def _unpack(self, batch: Batch) -> tuple[Tensor, Optional[Tensor]]:
        if isinstance(batch, dict):
            x, y = batch["x"], batch.get("y")
        elif isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        if not self.num_classes:
            return x, None
        if y is None:
            raise ValueError(f"The model is conditional (num_classes={self.num_classes}) but the batches carry no labels.")
        return x, y

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Optional[Tensor] = None) -> Tensor:
        return self.denoiser(x_t, t, class_labels)

    def _loss(
        self, x0: Tensor, y: Optional[Tensor], generator: Optional[torch.Generator] = None, denoiser: Optional[nn.Module] = None
    ) -> Tensor:
        t = eps = None
        if generator is not None:  # fixed t and eps: a validation loss comparable across epochs
            t = torch.randint(0, self.alphas_cumprod.numel(), (x0.shape[0],), generator=generator).to(self.device)
            eps = torch.randn(x0.shape, generator=generator).to(self.device)
        return diffusion.diffusion_loss(
            self.denoiser if denoiser is None else denoiser,
            x0,
            self.alphas_cumprod,
            self.prediction_type,
            self.hparams.loss_weighting,
            self.hparams.min_snr_gamma,
            class_labels=y,
            t=t,
            eps=eps,
        )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x0, y = self._unpack(batch)
        if y is not None and self.hparams.label_dropout > 0:  # train the unconditional model too (CFG)
            drop = torch.rand(y.shape, device=y.device) < self.hparams.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        loss = self._loss(x0, y, denoiser=self._train_denoiser)
        nonfinite = not torch.isfinite(loss).item()
        if self._trainer is not None:  # one decision for all ranks: none is left waiting in the gradient all-reduce
            nonfinite = self.trainer.strategy.reduce_boolean_decision(nonfinite, all=False)
        if nonfinite:
            last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "none saved yet"
            raise FloatingPointError(
                f"Non-finite loss at step {self.global_step} (epoch {self.current_epoch}): training stopped, the last "
                f"good checkpoint is {last}; lower the learning rate, clip gradients (trainer.gradient_clip_val) "
                "or prefer bf16-mixed to 16-mixed."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=x0.shape[0])
        return loss

    def _evaluation_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        x0, y = self._unpack(batch)
        loss = self._loss(x0, y, generator=torch.Generator().manual_seed(batch_idx))
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=x0.shape[0])
        if self.hparams.val_num_samples and sum(len(p) for p in self._val_points) < 2 * self.hparams.val_num_samples:
            self._val_points.append(x0.detach())
            if y is not None:
                self._val_labels.append(y.detach())

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def _gather(self, x: Tensor) -> Tensor:
        """Every rank's (equal-size) x, concatenated: metrics over all devices' samples, the same on every rank."""
        return self.all_gather(x).flatten(0, 1) if self.trainer.world_size > 1 else x

    def _sample_quality(self, stage: str) -> None:
        points, labels = self._val_points, self._val_labels
        self._val_points, self._val_labels = [], []
        if not points or self.trainer.sanity_checking:
            return
        real = torch.cat(points)
        m = min(self.hparams.val_num_samples // self.trainer.world_size, len(real) // 2)
        m = int(self.trainer.strategy.reduce(torch.tensor(m, device=self.device), reduce_op="min"))
        real_a, real_b = real[:m], real[m : 2 * m]
        all_labels = torch.cat(labels) if labels else None
        labels_a = all_labels[:m] if labels else None  # generate the class proportions of real_a
        labels_b = all_labels[m : 2 * m] if labels else None
        # each rank its own noise: seed offset by the rank, the same for every evaluation
        generator = torch.Generator().manual_seed(self.hparams.sample_seed + 7919 * self.global_rank)
        chunk = self.hparams.sample_batch_size or m
        generated = torch.cat([
            self.sample(len(part), class_labels=None if labels_a is None else labels_a[start : start + len(part)],
                        generator=generator, data_space=False)
            for start, part in zip(range(0, m, chunk), real_a.split(chunk))
        ])
        real_a, real_b, generated = self._gather(real_a), self._gather(real_b), self._gather(generated)
        if labels_a is not None:
            labels_a, labels_b = self._gather(labels_a), self._gather(labels_b)
        swd = sliced_wasserstein(generated, real_a)
        floor = sliced_wasserstein(real_b, real_a)
        metrics = {"swd": swd, "swd_floor": floor, "swd_ratio": swd / floor}
        metrics |= {"mmd": mmd_rbf(generated, real_a), "mmd_floor": mmd_rbf(real_b, real_a)}
        if self.sample_metrics:  # in data space, where images are in [0, 1]
            images = [self.to_data_space(x).float() for x in (generated, real_a, real_b)]
            for metric in self.sample_metrics:
                metrics |= metric.evaluate(images[0], images[1], images[2], labels_a, labels_b)
        # every rank holds the same values (computed on the gathered samples)
        self.log_dict({f"{stage}/{name}": value.float() for name, value in metrics.items()}, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._sample_quality("val")

    def on_test_epoch_end(self) -> None:
        self._sample_quality("test")

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Optional[Tensor]]:
        """`batch` is (class labels (-1: none), sample indices) of the requested samples (data.SampleRequests)."""
        requested, indices = batch
        labels = requested.long() if self.num_classes else None
        if labels is not None and (labels < 0).any():
            labels = indices.to(self.device) % self.num_classes
        seed = self.hparams.sample_seed << 32  # sample i of seed s has its own x_T, however the requests are split
        noise = torch.stack([
            torch.randn(self.sample_shape, generator=torch.Generator().manual_seed(seed + int(i))) for i in indices
        ])
        generator = torch.Generator().manual_seed(seed + int(indices[0]))  # the noise of stochastic samplers
        samples = self.sample(len(indices), class_labels=labels, generator=generator, noise=noise)
        return {
            "samples": samples.cpu(),
            "class_labels": None if labels is None else labels.cpu(),
            "indices": indices.cpu(),
        }

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self)
