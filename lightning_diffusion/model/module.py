"""DiffusionModule: a pluggable denoiser trained and sampled by a pluggable formulation (VP, EDM, flow matching)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from diffusers import SchedulerMixin
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_diffusion.checkpoints import check_checkpoint, drop_built_objects
from lightning_diffusion.formulations import Formulation
from lightning_diffusion.formulations.ddpm import LossWeighting, PredictionType, StepCallback
from lightning_diffusion.metrics.features import SampleMetrics
from lightning_diffusion.metrics.validation import HeldOut, ValidationSamples, sample_quality
from lightning_diffusion.model.batches import Batch, drop_labels, requested, training_samples, unpack
from lightning_diffusion.model.checks import check_arguments, check_held_out, resolve_formulation, sample_labels
from lightning_diffusion.model.guidance import GuidedNet, guide_network
from lightning_diffusion.model.loss_monitor import LossMonitor
from lightning_diffusion.model.metric_sampler import metric_sampling
from lightning_diffusion.model.seeding import seed_rank, seeded
from lightning_diffusion.optim import SharedFactory, configure_optimizers

# What the config's `denoiser` is: a class (with its options) that the module calls with the data's shape and classes.
DenoiserFactory = Callable[[tuple[int, ...], int | None], nn.Module]


class DiffusionModule(L.LightningModule):
    """Trains a denoiser with a formulation of diffusion and samples it with that formulation's samplers.

    The formulation is VP (DDPM's process over ``scheduler``, with ``prediction_type`` and ``loss_weighting``)
    unless ``formulation`` names another: ``EDM`` (Karras et al. 2022) or ``FlowMatching`` (Lipman et al. 2023).

    Args:
        denoiser: The network ``forward(x_t, t, class_labels=None)``: a class (``class_path`` and ``init_args``),
            called with the data's ``sample_shape`` and ``num_classes``, or, from Python, a built ``nn.Module``.
        scheduler: VP only: the noise schedule of training (formulations.VP's ``scheduler``).
        prediction_type: VP only: the training target, ``epsilon``, ``sample`` or ``v_prediction`` (formulations.VP).
        loss_weighting: VP only: ``uniform`` or ``min_snr`` (Hang et al. 2023).
        min_snr_gamma: VP only: the gamma of min-SNR weighting.
        formulation: Another formulation than VP, with its own options: ``lightning_diffusion.formulations.EDM``
            or ``lightning_diffusion.formulations.FlowMatching`` (then leave ``scheduler`` out).
        sampler: The sampler (``null``: the formulation's default). VP: a diffusers DDPM-family scheduler's class
            name (DDIMScheduler, DPMSolverMultistepScheduler, ...) or ``ddpm``/``ddim`` (the papers' steps); EDM:
            ``heun``, ``euler``, EDMEulerScheduler, EDMDPMSolverMultistepScheduler; FlowMatching: ``euler``,
            ``heun``, ``midpoint``, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler.
        sampler_kwargs: Options of the sampler, e.g. ``{timestep_spacing: trailing}`` or ``{S_churn: 40}``.
        num_inference_steps: Sampling steps (``null``: the formulation's default, VP 1000, EDM 18, flow 50).
        val_sampler: The sampler of the sample metrics only (``null``: ``sampler``), e.g. a few-step one so that many
            samples cost little; plots keep ``sampler``.
        val_num_inference_steps: Its steps (``null``: ``num_inference_steps``).
        val_sampler_kwargs: Its options (``null``: ``sampler_kwargs`` for ``sampler``, else the defaults).
        guidance_scale: Guidance scale w at sampling (1: the model alone; without a guide, 0: unconditional).
        guidance_interval: ``[sigma_lo, sigma_hi]``: guide only at noise levels sigma in it (Kynkäänniemi et al.
            2024), the model alone elsewhere; sigma as Formulation.noise_level defines it (``null``: everywhere).
        guide: A checkpoint (or run folder) of a weaker model of the same data and formulation to guide with
            instead of the unconditional model (autoguidance, Karras et al. 2024).
        label_dropout: Probability of replacing a label by the null label in training (classifier-free guidance).
        optimizer: Optimizer, given the parameters.
        lr_scheduler: Learning-rate scheduler, given the optimizer (``None``: constant).
        lr_scheduler_interval: Step the learning-rate scheduler every ``step`` or every ``epoch``.
        val_num_samples: Samples generated at the end of each validation and test (over all devices; 0: off) for
            ``<stage>/swd`` (sliced Wasserstein), ``<stage>/mmd`` (squared MMD, Gaussian kernel of bandwidth 1) and
            the ``sample_metrics``, with real-vs-real floors (``<stage>/swd_floor``); needs 2x as many held out.
        sample_metrics: Feature-space metrics of images, e.g. ``InceptionMetrics`` (FID, KID) and
            ``ClassifierMetrics`` (offline Frechet distance and class-conditional accuracy); see configs/metrics/.
        sample_batch_size: Samples generated per batch for the metrics (``None``: all at once).
        sample_seed: Seed of the noise of validation samples and ``predict``, so that results are comparable.
        compile: Train and sample through ``torch.compile`` of the denoiser (in place: checkpoints load either way).
        sample_shape: Shape of one sample; linked from the data by the CLI.
        num_classes: Number of classes of a conditional model (``None``: unconditional); linked from the data.
        class_names: Names of the classes, recorded for plots, logs and exports; linked from the data.
        data_mean: Per-channel mean that maps model space to data space (x * std + mean); linked from the data.
        data_std: Per-channel standard deviation, likewise.
    """

    # Choices of the call rather than of the trained model: on `--ckpt_path`, the command line keeps them.
    call_options: ClassVar[tuple[str, ...]] = (
        *("sampler", "sampler_kwargs", "num_inference_steps", "guidance_scale", "guidance_interval", "guide"),
        *("sample_seed", "val_num_samples", "sample_metrics", "sample_batch_size", "val_sampler"),
        *("val_num_inference_steps", "val_sampler_kwargs"),
    )

    def __init__(
        self,
        denoiser: DenoiserFactory,
        scheduler: SchedulerMixin | None = None,
        prediction_type: PredictionType = "epsilon",
        loss_weighting: LossWeighting = "uniform",
        min_snr_gamma: float = 5.0,
        formulation: Formulation | None = None,
        sampler: str | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        num_inference_steps: int | None = None,
        val_sampler: str | None = None,
        val_num_inference_steps: int | None = None,
        val_sampler_kwargs: dict[str, Any] | None = None,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
        guide: str | None = None,
        label_dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "epoch",
        val_num_samples: int = 0,
        sample_metrics: list[SampleMetrics] | None = None,
        sample_batch_size: int | None = None,
        sample_seed: int = 0,
        compile: bool = False,
        sample_shape: tuple[int, ...] = (2,),
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        data_mean: list[float] | None = None,
        data_std: list[float] | None = None,
    ) -> None:
        super().__init__()
        with warnings.catch_warnings():  # objects given from Python are dropped just below
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        drop_built_objects(self.hparams)

        formulation = resolve_formulation(formulation, scheduler, prediction_type, loss_weighting, min_snr_gamma)
        if not isinstance(denoiser, nn.Module):
            denoiser = denoiser(tuple(sample_shape), num_classes)
        self.formulation = formulation
        self.sampler_name = sampler or formulation.default_sampler
        self.num_inference_steps = formulation.default_steps if num_inference_steps is None else num_inference_steps
        options = {**self.hparams, "sample_metrics": sample_metrics}  # the metrics as built
        check_arguments(denoiser, formulation, self.sampler_name, self.num_inference_steps, options)
        # the sample metrics' options of `sample` where they differ from the model's ({}: the model's, as the plots)
        self.val_sampling = metric_sampling(formulation, self.sampler_name, self.num_inference_steps, options)

        self.denoiser = denoiser
        self.optimizer_fn = SharedFactory(optimizer)
        self.lr_scheduler_fn = SharedFactory(lr_scheduler) if lr_scheduler is not None else None
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        self.class_names = class_names
        self.sample_metrics = list(sample_metrics or [])  # a plain list: their networks stay out of the state_dict
        stats_shape = (1, -1, *([1] * (len(self.sample_shape) - 1)))  # broadcasts over (B, C, ...) or (B, D)
        self.register_buffer("data_mean", torch.tensor(data_mean or [0.0]).view(stats_shape), persistent=False)
        self.register_buffer("data_std", torch.tensor(data_std or [1.0]).view(stats_shape), persistent=False)
        self._held_out = HeldOut(val_num_samples)
        self._losses = LossMonitor()
        self.guides: dict[str, nn.Module] = {}  # the guide networks loaded, by path (kept out of the state_dict)
        self.last_train_loss: float | None = None
        # The first of the samples that the sample metrics of the last evaluation generated on this rank, for the
        # plots: how many of them (callbacks.SamplePlot and TrajectoryPlot set it), and of how many every sampler step
        self.validation_samples: ValidationSamples | None = None
        self.validation_samples_kept = 0
        self.validation_steps_kept = 0
        self.evaluation_num_samples: int | None = None  # the generated samples the last sample metrics used, all ranks'

    def to_data_space(self, x: Tensor) -> Tensor:
        return x * self.data_std + self.data_mean

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        class_labels: None | int | Sequence[int] | Tensor = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        callback: StepCallback | None = None,
        data_space: bool = True,
        noise: Tensor | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        guide: str | None = None,
    ) -> Tensor:
        """Generate `num_samples` samples (in data space unless `data_space=False`).

        `sampler`, `sampler_kwargs`, `num_inference_steps` and the guidance options override the configured ones for
        this call (``guide=""``: none); `generator` (a CPU generator) makes the result reproducible, as does a given
        standard normal `noise`; conditional models without `class_labels` cycle through the classes.
        `callback(i, t, x_t, x0_pred)` sees every step, with t the formulation's time (VP: the timestep, EDM: sigma,
        flow matching: t in [0, 1]).
        """
        labels = sample_labels(num_samples, class_labels, self.num_classes, self.device)
        noise = torch.randn((num_samples, *self.sample_shape), generator=generator) if noise is None else noise
        noise = noise.to(self.device)
        was_training = self.training
        self.eval()
        try:
            scale = self.hparams.guidance_scale if guidance_scale is None else guidance_scale
            interval = self.hparams.get("guidance_interval") if guidance_interval is None else guidance_interval
            weak = guide_network(self.guides, self, self.hparams.get("guide") if guide is None else guide)
            net = GuidedNet(self.denoiser, self.formulation, labels, self.num_classes, scale, weak, interval)
            options = self.hparams.sampler_kwargs if sampler_kwargs is None else sampler_kwargs
            x0 = self.formulation.sample(
                net,
                noise,
                sampler or self.sampler_name,
                num_inference_steps or self.num_inference_steps,
                dict(options or {}),
                generator=generator,
                callback=callback,
                image_like=len(self.sample_shape) > 1,
            )
        finally:
            self.train(was_training)
        return self.to_data_space(x0) if data_space else x0

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
        guide_network(self.guides, self, self.hparams.get("guide"))  # a guide that does not fit: before any work
        if stage in ("fit", "validate", "test"):
            self.load_sample_metrics(self.device)
            check_held_out(self.hparams.val_num_samples, getattr(self.trainer, "datamodule", None), stage)
        if stage == "fit":
            seed_rank(self.global_rank, self.trainer.world_size)
            datamodule, name = getattr(self.trainer, "datamodule", None), type(self.formulation).__name__
            samples = partial(training_samples, datamodule, self.num_classes, name, self.device)
            self.formulation.calibrate(samples)  # EDM measures sigma_data, unless given or resumed
            if self.hparams.compile:
                self.denoiser.compile()  # in place: the state_dict keeps its names

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return self.denoiser(x_t, t, class_labels)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x0, y = unpack(batch, self.num_classes)
        if y is not None and self.hparams.label_dropout > 0:
            y = drop_labels(y, self.hparams.label_dropout, self.num_classes)
        loss = self.formulation.loss(self.denoiser, x0, y)
        self._losses.log_step(self, loss, batch_idx, x0.shape[0])  # sets last_train_loss where it reads
        return loss

    def on_validation_start(self) -> None:
        self._losses.read_finite(self.all_gather, self.trainer)  # a validation inside an epoch: none after a NaN

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._losses.read_finite(self.all_gather, self.trainer)  # before the file is written, on every rank

    def _evaluation_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        x0, y = unpack(batch, self.num_classes)
        with seeded(batch_idx, self.device):  # the same times and noise at every evaluation: comparable losses
            loss = self.formulation.loss(self.denoiser, x0, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=x0.shape[0])
        self._held_out.collect(x0, y)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test")

    def _log_sample_quality(self, stage: str) -> None:
        real, labels = self._held_out.take()
        self.validation_samples = self.evaluation_num_samples = None
        if real is not None and not self.trainer.sanity_checking:
            kept = self.validation_samples_kept, self.validation_steps_kept
            metrics, self.validation_samples, self.evaluation_num_samples = sample_quality(self, real, labels, *kept)
            metrics = {f"{stage}/{name}": value.float() for name, value in metrics.items()}
            self.log_dict(metrics, sync_dist=True)  # every rank holds the same values: the reduce changes nothing

    def on_validation_epoch_end(self) -> None:
        self._log_sample_quality("val")

    def on_test_epoch_end(self) -> None:
        self._log_sample_quality("test")

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor | None]:
        """`batch` is (class labels (-1: none), sample indices) of the requested samples (data.SampleRequests)."""
        labels, noise, generator = requested(batch, self.hparams.sample_seed, self.sample_shape, self.num_classes)
        samples = self.sample(len(noise), class_labels=labels, generator=generator, noise=noise)
        indices = batch[1].cpu()
        return {"samples": samples.cpu(), "class_labels": None if labels is None else labels.cpu(), "indices": indices}

    def configure_optimizers(self) -> Any:
        return configure_optimizers(self)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> DiffusionModule:
        """Lightning's load_from_checkpoint, after checking the file holds a DiffusionModule (one sentence if not)
        and bringing older checkpoints' hyperparameters up to date (checkpoints.upgrade_hparams)."""
        hparams = check_checkpoint(checkpoint_path, "DiffusionModule")
        if isinstance(hparams.get("denoiser"), dict):  # built by the CLI: rebuild it from the upgraded config
            kwargs.setdefault("denoiser", hparams["denoiser"])
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
