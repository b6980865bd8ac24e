"""`python -m lightning_diffusion fit|validate|test|predict --config configs/<experiment>.yaml`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Literal, Optional

import torch

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_diffusion.callbacks.checkpointing import newest_checkpoint
from lightning_diffusion.data.base import DiffusionDataModule
from lightning_diffusion.loggers import SaveConfig, WandbLogger
from lightning_diffusion.module import DiffusionModule

# Choices of the call rather than of the trained model: on `--ckpt_path`, the command line keeps them.
SAMPLING_OPTIONS = (
    "sampler", "sampler_kwargs", "num_inference_steps", "guidance_scale", "sample_seed",
    "val_num_samples", "sample_metrics", "sample_batch_size",
)
DEFAULT_MODEL = "lightning_diffusion.DiffusionModule"


class DiffusionCLI(LightningCLI):
    """LightningCLI with the data linked into the model and every run under <output_dir>/<experiment>/<version>.

    The model is a DiffusionModule unless the config names another LightningModule with `model: class_path:`
    (e.g. the ImageClassifier of configs/mnist_classifier.yaml); the data's shape and classes are linked into it.
    """

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        self._diffusion = issubclass(_model_class(args), DiffusionModule)
        super().__init__(
            L.LightningModule,
            DiffusionDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the optimizer is an argument of DiffusionModule
            save_config_callback=SaveConfig,
            args=args,
            run=run,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=Optional[str],
            default=None,
            help="Name of the experiment: runs go to <output_dir>/<experiment>/version_N (default: the config's file name).",
        )
        parser.add_argument(
            "--float32_matmul_precision",
            type=Literal["highest", "high", "medium"],
            default="highest",
            help="torch.set_float32_matmul_precision: 'high' lets float32 matmuls use TF32 on Ampere+ GPUs.",
        )
        parser.add_argument(
            "--output_dir",
            type=str,
            default="outputs",
            help="Root folder of all run artifacts; the CSV/TensorBoard loggers write to <output_dir>/<experiment>.",
        )
        parser.set_defaults({"model": {"class_path": DEFAULT_MODEL}})
        # What the model must agree with comes from the data, never typed twice.
        for name in ("sample_shape", "num_classes", "class_names", "data_mean", "data_std"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        if self._diffusion:  # and into the denoiser, which is built before the model
            for name in ("sample_shape", "num_classes"):
                parser.link_arguments(f"data.{name}", f"model.init_args.denoiser.init_args.{name}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        # Lightning lays a checkpoint's hyperparameters over the command line; keep the sampling options given here.
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if config.get("ckpt_path") == "last":  # runs live in new version folders: find the newest checkpoint
            _set_experiment(config)
            newest = newest_checkpoint(config.output_dir, config.experiment)
            if newest is None:
                sys.stderr.write(
                    f"error: --ckpt_path last found no last.ckpt or interrupted.ckpt under "
                    f"{Path(config.output_dir) / config.experiment}/version_*/checkpoints: give a checkpoint path.\n"
                )
                raise SystemExit(2)
            config.ckpt_path = str(newest)
        model = self.config[subcommand].model.init_args
        given = {name: model[name] for name in SAMPLING_OPTIONS if name in model}
        super()._parse_ckpt_path()
        for name, value in given.items():
            self.config[subcommand].model.init_args[name] = value

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_float32_matmul_precision(config.float32_matmul_precision)
        _set_experiment(config)
        root = Path(config.output_dir) / config.experiment
        config.trainer.default_root_dir = str(root)
        if config.trainer.logger is False:
            return
        # A CSVLogger comes first: it owns the run folder <output_dir>/<experiment>/version_N (checkpoints,
        # plots, config.yaml), whatever other loggers the config adds.
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
        loggers = [logger for logger in loggers if isinstance(logger, Namespace) and _name(logger) != "CSVLogger"]
        csv = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace())
        for logger in [csv, *loggers]:  # also when a saved config is reused with another output_dir
            if _name(logger) in ("CSVLogger", "TensorBoardLogger"):
                logger.init_args.save_dir, logger.init_args.name = config.output_dir, config.experiment
            elif _name(logger) == "WandbLogger":
                logger.init_args.save_dir = str(root)
                logger.init_args.group = logger.init_args.get("group") or config.experiment
                logger.init_args.tags = sorted({*(logger.init_args.get("tags") or []), config.experiment})
        config.trainer.logger = [csv, *loggers]

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # a configuration the constructors reject: one sentence, no traceback
            sys.stderr.write(f"error: {error}\n")
            raise SystemExit(2) from error

    def _announce(self) -> None:
        config = self.config[self.subcommand]
        trainer = self.trainer
        run = trainer.logger.log_dir if trainer.logger is not None and hasattr(trainer.logger, "log_dir") else None
        rank_zero_info(
            f"lightning-diffusion {self.subcommand}: experiment {config.experiment!r}, seed {config.seed_everything}, "
            f"device {trainer.strategy.root_device} x{trainer.world_size}, precision {trainer.precision}, "
            f"run folder {run or trainer.default_root_dir}"
        )

    def _prepare_sample_metrics(self) -> None:
        """Feature extractors are fetched and loaded now, so a missing file is one sentence before any work."""
        if not isinstance(self.model, DiffusionModule):
            return
        try:  # the module's own hooks, called early; inside the run Lightning calls them again and they find all loaded
            self.model.prepare_data()
            self.model.load_sample_metrics(torch.device("cpu"))
        except ValueError as error:
            sys.stderr.write(f"error: {error}\n")
            raise SystemExit(2) from error

    def _before_evaluation(self) -> None:
        self._prepare_sample_metrics()
        self._announce()

    before_validate = before_test = _before_evaluation
    before_predict = _announce

    def _name_wandb_runs(self) -> None:
        """W&B runs without a name are named after the local run folder: <experiment>/version_N."""
        csv = self.trainer.loggers[0] if self.trainer.loggers else None
        for logger in self.trainer.loggers[1:]:
            if isinstance(logger, WandbLogger) and logger.given_name is None and self.trainer.is_global_zero:
                logger.experiment.name = f"{csv.name}/version_{csv.version}"

    def before_fit(self) -> None:
        self._prepare_sample_metrics()
        self._announce()
        trainer, data = self.trainer, self.datamodule
        self._name_wandb_runs()
        per_device = getattr(data, "batch_size", None)
        if per_device is not None:
            effective = per_device * trainer.world_size * trainer.accumulate_grad_batches
            optimizer = self.config[self.subcommand].model.init_args.get("optimizer")
            lr = optimizer.init_args.get("lr") if isinstance(optimizer, Namespace) else None
            rank_zero_info(
                f"effective batch size {effective} = {per_device} per device x {trainer.world_size} devices x "
                f"{trainer.accumulate_grad_batches} accumulated; learning rate {lr} (not rescaled with the batch)"
            )


def _set_experiment(config: Namespace) -> None:
    """The experiment is named by the config (`experiment:`), or else by the last config file's name."""
    if config.experiment is None:
        config_files = config.get("config") or []
        config.experiment = Path(str(config_files[-1])).stem if config_files else "default"


def _model_class(args: Optional[list[str]]) -> type:
    """The model class the command line selects: the last `model: class_path:` of its config files or
    `--model.class_path` options, else DiffusionModule. Known before parsing, because the links depend on it."""
    args = sys.argv[1:] if args is None else list(args)
    class_path = DEFAULT_MODEL
    for i, arg in enumerate(args):
        key, _, value = arg.partition("=")
        value = value or (args[i + 1] if i + 1 < len(args) else "")
        if key == "--config" and Path(value).is_file():
            model = (yaml.safe_load(Path(value).read_text()) or {}).get("model")
            class_path = model.get("class_path", class_path) if isinstance(model, dict) else class_path
        elif key in ("--model.class_path", "--model") and not value.endswith((".yaml", ".yml")):
            class_path = value
    if "." not in class_path:  # a bare class name, as LightningCLI accepts
        class_path = {"DiffusionModule": DEFAULT_MODEL, "ImageClassifier": "lightning_diffusion.ImageClassifier"}.get(
            class_path, class_path
        )
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return cls if isinstance(cls, type) else L.LightningModule
    except (ImportError, AttributeError, ValueError):
        return L.LightningModule  # not importable: let the parser report it


def _name(logger: Namespace) -> str:
    return logger.class_path.rsplit(".", 1)[-1]


def main(args: Optional[list[str]] = None) -> DiffusionCLI:
    """Entry point; `args` lets tests drive the real CLI in-process."""
    return DiffusionCLI(args=args)
