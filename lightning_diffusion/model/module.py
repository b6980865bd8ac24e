"""DiffusionModule: a pluggable denoiser trained and sampled by a pluggable formulation (VP/DDPM, EDM, flow
matching)."""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from diffusers import SchedulerMixin
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.utils.data import default_collate

from lightning_diffusion.checkpoints import check_checkpoint, drop_built_objects
from lightning_diffusion.formulations import Formulation
from lightning_diffusion.formulations import ddpm as diffusion
from lightning_diffusion.formulations.ddpm import LossWeighting, PredictionType, StepCallback
from lightning_diffusion.lightning_private import attached_trainer
from lightning_diffusion.metrics.features import SampleMetrics
from lightning_diffusion.metrics.validation import HeldOut, ValidationSamples, request_noise, sample_quality
from lightning_diffusion.model.checks import check_arguments, check_held_out, resolve_formulation, sample_labels
from lightning_diffusion.model.loss_monitor import LossMonitor
from lightning_diffusion.optim import SharedFactory, configure_optimizers

Batch = Tensor | Sequence[Tensor] | dict
# What the config's `denoiser` is: a class (with its options) that the module calls with the data's shape and classes.
DenoiserFactory = Callable[[tuple[int, ...], int | None], nn.Module]


class DiffusionModule(L.LightningModule):
    """Trains a denoiser with a formulation of diffusion and samples it with that formulation's samplers.

    The formulation is VP (DDPM's process over ``scheduler``, with ``prediction_type`` and ``loss_weighting``)
    unless ``formulation`` names another: ``EDM`` (Karras et al. 2022) or ``FlowMatching`` (Lipman et al. 2023).

    Args:
        denoiser: The network, ``forward(x_t, t, class_labels=None)``, predicting what the formulation trains it
            for: a class (``class_path`` and its ``init_args`` in the config) that is called with the data's
            ``sample_shape`` and ``num_classes``, or, from Python, a built ``nn.Module``.
        scheduler: VP only: the noise schedule of training (a diffusers scheduler with ``alphas_cumprod``, e.g.
            DDPMScheduler); its own ``prediction_type`` is ignored in favour of this module's.
        prediction_type: VP only: the training target: ``epsilon`` (Ho et al. 2020), ``sample`` (x0) or
            ``v_prediction`` (Salimans & Ho 2022).
        loss_weighting: VP only: ``uniform`` (the simple loss) or ``min_snr`` (Hang et al. 2023).
        min_snr_gamma: VP only: the gamma of min-SNR weighting.
        formulation: Another formulation than VP, with its own options: ``lightning_diffusion.formulations.EDM``
            or ``lightning_diffusion.formulations.FlowMatching`` (then leave ``scheduler`` out).
        sampler: The sampler of generation (``null``: the formulation's default). VP: any diffusers DDPM-family
            scheduler class name (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, ...), built fresh from
            the training schedule for every call, or ``ddpm``/``ddim`` (the papers' steps); EDM: ``heun``,
            ``euler``, EDMEulerScheduler, EDMDPMSolverMultistepScheduler; FlowMatching: ``euler``, ``heun``,
            ``midpoint``, FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler.
        sampler_kwargs: Options of the sampler, e.g. ``{timestep_spacing: trailing}`` or ``{S_churn: 40}``.
        num_inference_steps: Sampling steps (``null``: the formulation's default, VP 1000, EDM 18, flow 50).
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
        compile: Train and sample through ``torch.compile`` of the denoiser (``nn.Module.compile``, in place: the
            weights keep their names, so checkpoints load with or without it).
        sample_shape: Shape of one sample; linked from the data by the CLI.
        num_classes: Number of classes of a conditional model (``None``: unconditional); linked from the data.
        class_names: Names of the classes, recorded for plots, logs and exports; linked from the data.
        data_mean: Per-channel mean that maps model space to data space (x * std + mean); linked from the data.
        data_std: Per-channel standard deviation, likewise.
    """

    # Choices of the call rather than of the trained model: on `--ckpt_path`, the command line keeps them.
    call_options: ClassVar[tuple[str, ...]] = (
        "sampler",
        "sampler_kwargs",
        "num_inference_steps",
        "guidance_scale",
        "sample_seed",
        "val_num_samples",
        "sample_metrics",
        "sample_batch_size",
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
        guidance_scale: float = 1.0,
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
        self.num_inference_steps = num_inference_steps or formulation.default_steps
        check_arguments(
            denoiser,
            formulation,
            sampler=self.sampler_name,
            sampler_kwargs=dict(sampler_kwargs or {}),
            num_inference_steps=self.num_inference_steps,
            label_dropout=label_dropout,
            guidance_scale=guidance_scale,
            val_num_samples=val_num_samples,
            sample_metrics=sample_metrics,
            sample_batch_size=sample_batch_size,
            sample_shape=tuple(sample_shape),
            num_classes=num_classes,
        )

        self.denoiser = denoiser
        self.optimizer_fn = SharedFactory(optimizer)
        self.lr_scheduler_fn = SharedFactory(lr_scheduler) if lr_scheduler is not None else None
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        self.class_names = class_names
        self.sample_metrics = list(sample_metrics or [])  # a plain list: their networks stay out of the state_dict
        stats_shape = (1, -1, *([1] * (len(self.sample_shape) - 1)))  # broadcasts over (B, C, ...) or (B, D)
        mean = torch.tensor(data_mean if data_mean is not None else [0.0]).view(stats_shape)
        std = torch.tensor(data_std if data_std is not None else [1.0]).view(stats_shape)
        self.register_buffer("data_mean", mean, persistent=False)
        self.register_buffer("data_std", std, persistent=False)
        self._held_out = HeldOut(val_num_samples)
        self._losses = LossMonitor()
        self.last_train_loss: float | None = None
        # The first of the samples that the sample metrics of the last evaluation generated on this rank, for the
        # plots: how many of them (callbacks.SamplePlot and TrajectoryPlot set it), and of how many every sampler step
        self.validation_samples: ValidationSamples | None = None
        self.validation_samples_kept = 0
        self.validation_steps_kept = 0
        self.evaluation_num_samples: int | None = None  # the generated samples the last sample metrics used, all ranks'

    # ---------------------------------------------------------------- sampling

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
    ) -> Tensor:
        """Generate `num_samples` samples (in data space unless `data_space=False`).

        `sampler`, `sampler_kwargs`, `num_inference_steps` and `guidance_scale` override the configured ones for this
        call; `generator` (a CPU generator) makes the result reproducible, as does a given standard normal `noise`;
        conditional models without `class_labels` cycle through the classes. `callback(i, t, x_t, x0_pred)` sees every
        step, with t the formulation's time (VP: the timestep, EDM: sigma, flow matching: t in [0, 1]).
        """
        labels = sample_labels(num_samples, class_labels, self.num_classes, self.device)
        if noise is None:
            noise = torch.randn((num_samples, *self.sample_shape), generator=generator)
        noise = noise.to(self.device)
        was_training = self.training
        self.eval()
        try:
            net = partial(
                diffusion.guided_output,
                self.denoiser,
                class_labels=labels,
                null_label=self.num_classes,
                guidance_scale=self.hparams.guidance_scale if guidance_scale is None else guidance_scale,
            )
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
            datamodule = getattr(self.trainer, "datamodule", None)
            if self.hparams.val_num_samples and datamodule is not None:
                split = "test" if stage == "test" else "validation"
                loader = datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader()
                check_held_out(self.hparams.val_num_samples, len(loader.dataset), split)
        if stage == "fit":
            self._seed_this_rank()
            self.formulation.calibrate(self._training_samples)  # EDM measures sigma_data, unless given or resumed
            if self.hparams.compile:
                self.denoiser.compile()  # in place: the state_dict keeps its names

    def _seed_this_rank(self) -> None:
        """Each DDP rank its own random stream (timesteps, noise, label dropout, flips), derived from the run's seed
        and the rank, so that a step sees world_size independent draws. Rank 0 keeps the run's own stream, so one
        device draws what it always drew; the data order is DistributedSampler's, which has a generator of its own."""
        seed = os.environ.get("PL_GLOBAL_SEED")  # seed_everything's; without one, every process is seeded apart
        if self.trainer.world_size > 1 and seed is not None and self.global_rank > 0:
            rank_seed = (int(seed) + 1_000_003 * self.global_rank) % 2**32
            random.seed(rank_seed)
            np.random.seed(rank_seed)
            torch.manual_seed(rank_seed)  # and every CUDA device's generator

    def _training_samples(self, num_samples: int = 1024) -> Tensor:
        """Up to `num_samples` training samples in model space, evenly spread over the training set (the same on
        every rank, so that what a formulation measures on them agrees)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError(
                f"{type(self.formulation).__name__} measures the data on the datamodule's training set, but this fit "
                "has no datamodule: give the measured value (e.g. EDM's sigma_data) or fit with a datamodule."
            )
        dataset = datamodule.train_dataloader().dataset
        index = torch.linspace(0, len(dataset) - 1, min(num_samples, len(dataset))).long().tolist()
        return self._unpack(default_collate([dataset[i] for i in index]))[0].to(self.device)

    def _unpack(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, dict):
            x, y = batch["x"], batch.get("y")
        elif isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        if not self.num_classes:
            return x, None
        if y is None:
            raise ValueError(
                f"The model is conditional (num_classes={self.num_classes}) but the batches carry no labels."
            )
        return x, y

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return self.denoiser(x_t, t, class_labels)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x0, y = self._unpack(batch)
        if y is not None and self.hparams.label_dropout > 0:  # train the unconditional model too (CFG)
            drop = torch.rand(y.shape, device=y.device) < self.hparams.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        loss = self.formulation.loss(self.denoiser, x0, y)
        trainer = attached_trainer(self)
        if trainer is None:
            return loss
        self._losses.update(loss, trainer.global_step)
        # The host reads the losses (one sync, one collective) only where Lightning logs (after the optimizer step
        # global_step + 1 of this batch, every log_every_n_steps) and on the epoch's last batch, before any
        # end-of-epoch checkpoint: a non-finite loss never reaches a saved checkpoint.
        every = trainer.log_every_n_steps
        logging = every > 0 and ((trainer.global_step + 1) % every == 0 or trainer.should_stop)
        if logging or batch_idx + 1 >= trainer.num_training_batches:
            self.last_train_loss = self._read_losses()  # a float on the host: callbacks.LossProgressBar shows it
            self.log("train/loss", self.last_train_loss, batch_size=x0.shape[0])
        return loss

    def on_validation_start(self) -> None:
        if self._losses.count:  # a validation inside an epoch: no checkpoint after a non-finite loss
            self._read_losses()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._losses.count:  # before the file is written (every rank takes part in a save)
            self._read_losses()

    def _read_losses(self) -> float:
        """The mean training loss since the last read, over all ranks; a non-finite one stops the fit on every rank,
        naming the step and the newest checkpoint (all saved before that step: a read comes before every save)."""
        mean, bad_step = self._losses.read(self.all_gather)
        if bad_step is not None:
            saved = newest_saved_checkpoint(self.trainer)
            raise FloatingPointError(
                f"Non-finite loss at step {bad_step} (epoch {self.current_epoch}): training stopped, the newest good "
                f"checkpoint is {saved or 'none saved yet'}; lower the learning rate, clip gradients "
                "(trainer.gradient_clip_val) or prefer bf16-mixed to 16-mixed."
            )
        return mean

    def _evaluation_step(self, batch: Batch, batch_idx: int, stage: str) -> None:
        x0, y = self._unpack(batch)
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
        if real is None or self.trainer.sanity_checking:
            return
        metrics, self.validation_samples, self.evaluation_num_samples = sample_quality(
            self, real, labels, self.validation_samples_kept, self.validation_steps_kept
        )
        # every rank holds the same values: the reduce changes nothing
        self.log_dict({f"{stage}/{name}": value.float() for name, value in metrics.items()}, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_sample_quality("val")

    def on_test_epoch_end(self) -> None:
        self._log_sample_quality("test")

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor | None]:
        """`batch` is (class labels (-1: none), sample indices) of the requested samples (data.SampleRequests)."""
        requested, indices = batch
        labels = requested.long() if self.num_classes else None
        if labels is not None and (labels < 0).any():
            labels = indices.to(self.device) % self.num_classes
        noise, generator = request_noise(indices, self.hparams.sample_seed, self.sample_shape)
        samples = self.sample(len(indices), class_labels=labels, generator=generator, noise=noise)
        return {
            "samples": samples.cpu(),
            "class_labels": None if labels is None else labels.cpu(),
            "indices": indices.cpu(),
        }

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


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Draws from `seed` on the CPU and on `device`, and leaves their random streams as they were (the training's,
    so that a run that validates resumes exactly)."""
    accelerator = [device] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=accelerator, device_type=device.type if accelerator else None):
        torch.default_generator.manual_seed(seed)
        if accelerator:
            torch.get_device_module(device).manual_seed(seed)  # the current device, which Lightning makes `device`
        yield


def newest_saved_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest checkpoint file that this fit's ModelCheckpoint callbacks saved, or the one it resumed from."""
    paths = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            paths += [callback.last_model_path, callback.best_model_path, *callback.best_k_models]
    files = [Path(path) for path in [*paths, trainer.ckpt_path] if path and Path(path).is_file()]
    return max(files, key=lambda path: path.stat().st_mtime, default=None)  # a tie: last.ckpt, listed first
