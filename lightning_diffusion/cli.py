"""The training commands, `python -m lightning_diffusion fit|validate|test|predict --config <experiment>.yaml`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from jsonargparse import Namespace
from jsonargparse.typing import PositiveFloat
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from lightning_diffusion.callbacks import (
    CheckpointOnSignal,
    ExactResume,
    LossProgressBar,
    LostRank,
    MetricsWriter,
    RunSummary,
    SampleWriter,
)
from lightning_diffusion.checkpoints import check_checkpoint, last_checkpoint, with_atomic_checkpoint_io
from lightning_diffusion.data.base import DiffusionDataModule
from lightning_diffusion.data.checks import refuse_empty_data
from lightning_diffusion.errors import import_class, one_line_errors
from lightning_diffusion.lightning_private import set_collective_timeout
from lightning_diffusion.loggers import SaveConfig, WandbLogger
from lightning_diffusion.model.module import DiffusionModule
from lightning_diffusion.runs import claim_numbered, experiment_name, remove_if_unused, run_dir

DEFAULT_MODEL = "lightning_diffusion.DiffusionModule"


class DiffusionCLI(LightningCLI):
    """LightningCLI with the data linked into the model and every run under <output_dir>/<experiment>/<version>.

    The model is a DiffusionModule unless the config names another LightningModule with `model: class_path:`
    (e.g. the ImageClassifier of configs/mnist_classifier.yaml); the data's shape and classes are linked into it.
    Errors are raised, never printed here: `main` says each expected one in one line (errors.one_line_errors), and
    a failed run leaves no version folder that holds nothing but its config.
    """

    def __init__(self, args=None, run: bool = True, **kwargs) -> None:
        self._run_folder: Path | None = None  # set once the run's version folder is named (_announce)
        # parse errors are raised rather than printed with the usage, so errors.one_line_errors says them in one line
        kwargs["parser_kwargs"] = {"exit_on_error": False, **(kwargs.get("parser_kwargs") or {})}
        try:
            super().__init__(
                L.LightningModule,
                DiffusionDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                auto_configure_optimizers=False,  # the optimizer is an argument of the model
                save_config_callback=SaveConfig,
                args=args,
                run=run,
                **kwargs,
            )
        except BaseException:
            self._remove_unused_run_folder()
            raise

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="Name of the experiment: runs go to <output_dir>/<experiment>/version_N (default: the config's file "
            "name).",
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
        parser.add_argument(
            "--default_callbacks",
            type=bool,
            default=True,
            help="Add the callbacks every run has (ExactResume, CheckpointOnSignal, MetricsWriter, SampleWriter and "
            "RunSummary for diffusion models, a ModelCheckpoint of the latest epoch with last.ckpt) unless "
            "trainer.callbacks already has one of that kind; false adds none.",
        )
        parser.add_argument(
            "--collective_timeout",
            type=PositiveFloat,
            default=1800.0,
            help="Seconds a DDP rank waits in a collective before the run ends in one line (torch's default).",
        )
        parser.set_defaults({"model": {"class_path": DEFAULT_MODEL}})
        # What the model must agree with comes from the data, never typed twice; the model passes the shape and
        # classes on to the denoiser it builds.
        for name in ("sample_shape", "num_classes", "class_names", "data_mean", "data_std"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Lightning lays a checkpoint's hyperparameters over the command line (this replaces its private method,
        fenced in lightning_private.py); here the call options given on the command line are kept, `last` finds the
        experiment's newest readable checkpoint, and a checkpoint of another model class or of other data is one
        sentence; validate, test and predict without a checkpoint are refused (untrained weights measure nothing)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if not config.get("ckpt_path"):
            if subcommand in ("validate", "test", "predict"):
                raise ValueError(
                    f"{subcommand} needs a trained model, and untrained weights would {_UNTRAINED[subcommand]}: give "
                    "--ckpt_path with a checkpoint of a run (or --ckpt_path last for the experiment's newest)."
                )
            return
        config.experiment = experiment_name(config.experiment, config.get("config") or [])
        if config.ckpt_path == "last":  # runs live in new version folders: find the newest checkpoint
            config.ckpt_path = str(last_checkpoint(config.output_dir, config.experiment))
        model_class = import_class(config.model.class_path)
        sample_shape, num_classes = _data_contract(config)
        hparams = check_checkpoint(
            config.ckpt_path,
            model_class.__name__,
            sample_shape,
            num_classes,
            weights_only=config.get("weights_only") is not False,
        )
        hparams = {k: v for k, v in hparams.items() if k != "_instantiator"}
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        given = {
            name: config.model.init_args[name]
            for name in getattr(model_class, "call_options", ())
            if name in config.model.init_args
        }
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        for name, value in given.items():
            self.config[subcommand].model.init_args[name] = value

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_float32_matmul_precision(config.float32_matmul_precision)
        config.experiment = experiment_name(config.experiment, config.get("config") or [])
        root = Path(config.output_dir) / config.experiment
        config.trainer.default_root_dir = str(root)
        self._new_root = None if root.exists() else root  # removed again if a failed run leaves it empty
        if config.trainer.logger is False:
            return
        # A CSVLogger comes first: it owns the run folder <output_dir>/<experiment>/version_N (checkpoints,
        # plots, config.yaml), whatever other loggers the config adds.
        loggers = config.trainer.logger if isinstance(config.trainer.logger, list) else [config.trainer.logger]
        loggers = [logger for logger in loggers if isinstance(logger, Namespace) and _name(logger) != "CSVLogger"]
        csv = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace())
        claim = self.subcommand and rank_zero_only.rank == 0  # a run (not a tool's model) claims its own version
        self._run_folder = claim_numbered(root, "version_{}") if claim else None
        for logger in [csv, *loggers]:  # also when a saved config is reused with another output_dir
            if _name(logger) in ("CSVLogger", "TensorBoardLogger"):
                logger.init_args.save_dir, logger.init_args.name = config.output_dir, config.experiment
                logger.init_args.version = self._run_folder and int(self._run_folder.name[8:])
            elif _name(logger) == "WandbLogger":
                logger.init_args.save_dir = str(root)
                logger.init_args.group = logger.init_args.get("group") or config.experiment
                logger.init_args.tags = sorted({*(logger.init_args.get("tags") or []), config.experiment})
        config.trainer.logger = [csv, *loggers]

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """The Trainer, with the callbacks every run has added unless the config has its own of that kind."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        accelerator = config.trainer.get("accelerator")
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"trainer.accelerator is {accelerator}, but torch sees no CUDA GPU on this machine: use "
                "--trainer.accelerator cpu (or auto, which takes a GPU where there is one)."
            )
        callbacks = [*(config.trainer.get("callbacks") or []), _AfterDataSetup(self._name_wandb_runs)]
        if config.default_callbacks:
            defaults = self._default_callbacks(config.trainer.get("enable_progress_bar") is not False, config)
            callbacks += [callback for callback in defaults if not _has_kind(callbacks, callback)]
        plugins = with_atomic_checkpoint_io(config.trainer.get("plugins"))  # every checkpoint whole or not at all
        try:
            trainer = super().instantiate_trainer(**kwargs, callbacks=callbacks, plugins=plugins)
        except (TypeError, ImportError) as error:  # Lightning's answer to a wrong option or a missing backend
            raise ValueError(f"The Trainer refused its options: {' '.join(str(error).split())}") from error
        set_collective_timeout(trainer, config.collective_timeout)
        return trainer

    def _default_callbacks(self, progress_bar: bool, config: Namespace) -> list[L.Callback]:
        latest = ModelCheckpoint(save_last="link", save_on_train_epoch_end=True)  # every epoch; last.ckpt links to it
        callbacks = [ExactResume(), CheckpointOnSignal(), MetricsWriter(), latest, LostRank(config.collective_timeout)]
        callbacks += [LossProgressBar()] if progress_bar else []  # the loss without a host sync per step
        return [*callbacks, SampleWriter(), RunSummary()] if isinstance(self.model, DiffusionModule) else callbacks

    def _announce(self) -> None:
        config = self.config[self.subcommand]
        trainer = self.trainer
        run = trainer.logger.log_dir if trainer.logger is not None and hasattr(trainer.logger, "log_dir") else None
        self._run_folder = run_dir(trainer) if trainer.loggers else None
        rank_zero_info(
            f"lightning-diffusion {self.subcommand}: experiment {config.experiment!r}, seed {config.seed_everything}, "
            f"device {trainer.strategy.root_device} x{trainer.world_size}, precision {trainer.precision}, "
            f"run folder {run or trainer.default_root_dir}"
        )

    def _remove_unused_run_folder(self) -> None:
        """After a failed run (on rank zero): its version folder, if it holds nothing but its config."""
        trainer = getattr(self, "trainer", None)
        if self._run_folder is not None and (trainer is None or trainer.is_global_zero):
            remove_if_unused(self._run_folder, getattr(self, "_new_root", None))

    def _prepare_sample_metrics(self) -> None:
        """Feature extractors are fetched and loaded now, so a missing file is one sentence before any work."""
        if not isinstance(self.model, DiffusionModule):
            return
        # the module's own hooks, called early; inside the run Lightning calls them again and they find all loaded
        self.model.prepare_data()
        self.model.load_sample_metrics(torch.device("cpu"))

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
        per_device = getattr(data, "batch_size", None)
        if per_device is not None:
            effective = per_device * trainer.world_size * trainer.accumulate_grad_batches
            optimizer = self.config[self.subcommand].model.init_args.get("optimizer")
            lr = optimizer.init_args.get("lr") if isinstance(optimizer, Namespace) else None
            rank_zero_info(
                f"effective batch size {effective} = {per_device} per device x {trainer.world_size} devices x "
                f"{trainer.accumulate_grad_batches} accumulated; learning rate {lr} (not rescaled with the batch)"
            )


def _has_kind(callbacks: list[L.Callback], default: L.Callback) -> bool:
    """Whether the config's callbacks already do the default's job (for checkpoints: one that keeps last.ckpt)."""
    if isinstance(default, Checkpoint):
        return any(isinstance(c, ModelCheckpoint) and c.save_last for c in callbacks)
    if isinstance(default, ProgressBar):
        return any(isinstance(c, ProgressBar) for c in callbacks)
    return any(isinstance(c, type(default)) for c in callbacks)


_UNTRAINED = {"validate": "measure nothing", "test": "measure nothing", "predict": "sample noise"}


def _data_contract(config: Namespace) -> tuple[tuple[int, ...] | None, int | None]:
    """The sample shape and classes of the config's data, from its constructor alone (no data is read), so that a
    checkpoint trained on other data is one sentence before the model is built from it."""
    data = config.get("data")
    if not isinstance(data, Namespace) or not data.get("class_path"):
        return None, None
    init_args = data.get("init_args")
    module = import_class(data.class_path)(**(init_args.as_dict() if isinstance(init_args, Namespace) else {}))
    return tuple(module.sample_shape), module.num_classes


class _AfterDataSetup(L.Callback):
    """The CLI's own steps once the data is set up, before the sanity check or the first batch (added to every run):
    a run whose data gives no batch is refused (Lightning would warn and succeed); then, in a fit, `then` names the
    W&B runs, which starts them, so that a data error leaves no W&B run behind."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.then = then

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        refuse_empty_data(trainer, stage)
        if stage == "fit":
            self.then()


def _name(logger: Namespace) -> str:
    return logger.class_path.rsplit(".", 1)[-1]


def main(args: list[str] | None = None) -> DiffusionCLI:
    """Entry point; `args` lets tests drive the real CLI in-process. An expected error ends as one line
    `error: ...` and a non-zero exit (errors.one_line_errors); LIGHTNING_DIFFUSION_DEBUG=1 shows its traceback."""
    with one_line_errors(sys.argv[1:] if args is None else args):
        return DiffusionCLI(args=args)
