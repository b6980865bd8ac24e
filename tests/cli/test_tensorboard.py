"""The TensorBoard branch of callbacks/artifacts.log_png: plots and grids reach a TensorBoardLogger as images under
their stable keys, with a recording writer and through the CLI into a real event file (tensorboard is a test
dependency)."""

from types import SimpleNamespace

import numpy as np
from conftest import REPO
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image


class _RecordingWriter:
    def __init__(self) -> None:
        self.images = []

    def add_image(self, tag, image, global_step=None, dataformats="CHW"):
        self.images.append((tag, image, global_step, dataformats))


class _RecordingTensorBoard(TensorBoardLogger):
    def __init__(self) -> None:  # TensorBoardLogger's own needs tensorboard or tensorboardX installed
        self._experiment = _RecordingWriter()


def test_log_png_sends_the_png_to_tensorboard_as_an_image(tmp_path):
    from lightning_diffusion.callbacks.artifacts import log_png

    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "plot.png")
    Image.fromarray(pixels).convert("RGBA").save(tmp_path / "rgba.png")  # matplotlib's PNGs have an alpha channel
    logger = _RecordingTensorBoard()
    log_png(SimpleNamespace(loggers=[logger], global_step=7), "plots/samples", tmp_path / "plot.png")
    log_png(SimpleNamespace(loggers=[logger], global_step=8), "plots/trajectory", tmp_path / "rgba.png")
    (tag, image, step, formats), (tag2, image2, step2, _) = logger.experiment.images
    assert (tag, step, formats, tag2, step2) == ("plots/samples", 7, "HWC", "plots/trajectory", 8)
    assert np.array_equal(image, pixels) and np.array_equal(image2, pixels)


def test_fit_with_a_tensorboard_logger_writes_the_plots_to_its_event_file(run_cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # its save_dir is required by the parser; the CLI replaces it by the run folder's <output_dir>/<experiment>
    cli = run_cli(
        "fit",
        "--config",
        str(REPO / "configs/moons.yaml"),
        "--trainer.logger+=lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.save_dir",
        "replaced",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--data.init_args.num_samples",
        "1024",
        "--data.init_args.num_val_samples",
        "256",
        "--model.val_num_samples",
        "64",
        "--model.num_inference_steps",
        "10",
    )
    tensorboard = cli.trainer.loggers[1]
    assert isinstance(tensorboard, TensorBoardLogger)
    tensorboard.experiment.flush()
    (events,) = (tmp_path / "outputs").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0}).Reload()
    assert {"plots/samples", "plots/trajectory"} <= set(accumulator.Tags()["images"])
    (image,) = accumulator.Images("plots/samples")
    (png,) = (tmp_path / "outputs").rglob("samples_epoch=0000.png")
    assert (image.width, image.height) == Image.open(png).size and image.step == cli.trainer.global_step
