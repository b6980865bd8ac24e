"""Sample quality and wall time of diffusers samplers on a trained class-conditional image checkpoint, scored by
the offline classifier (configs/mnist_classifier.yaml).

    python benchmarks/samplers_images.py --ckpt outputs/mnist_cond/version_0/checkpoints/last.ckpt \
        --classifier outputs/mnist_classifier

Prints classifier Frechet distance (with its real-vs-real floor), KID and class-conditional accuracy per sampler,
against held-out test images of the checkpoint's own data config, and appends the table with the command and the
machine to notes/benchmarks.md. Every sampler starts from the same x_T and asks for the same labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser

from report import publish
from samplers_2d import parse_samplers  # the same sampler set as the 2D table

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data.base import DiffusionDataModule
from lightning_diffusion.evaluation import ClassifierMetrics


def held_out(ckpt: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """2n test images (data space) and labels from the data config saved beside the checkpoint."""
    config = yaml.safe_load((ckpt.parent.parent / "config.yaml").read_text())["data"]
    parser = ArgumentParser()
    parser.add_subclass_arguments(DiffusionDataModule, "data")
    data = parser.instantiate(parser.parse_args(["--data", yaml.safe_dump(config)])).data
    data.prepare_data()
    data.setup("test")
    batches = list(data.test_dataloader())
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    if len(x) < 2 * n:
        raise SystemExit(f"error: the test split has {len(x)} images; --num_samples {n} needs {2 * n}.")
    mean = torch.tensor(data.data_mean).view(1, -1, 1, 1)
    std = torch.tensor(data.data_std).view(1, -1, 1, 1)
    return x[: 2 * n] * std + mean, y[: 2 * n]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--classifier", required=True, help="classifier checkpoint, run folder or experiment folder")
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--guidance_scale", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--samplers", nargs="*", default=None, help="NAME:STEPS pairs (default: the standard set)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    samplers = parse_samplers(args.samplers)

    model = DiffusionModule.load_from_checkpoint(args.ckpt, map_location="cpu")
    metric = ClassifierMetrics(args.classifier)
    metric.setup(torch.device("cpu"))
    metric.check(model.sample_shape, model.num_classes)
    n = args.num_samples
    images, labels = held_out(args.ckpt, n)
    real, real_b, labels_b = images[:n], images[n:], labels[n:]
    noise = torch.randn((n, *model.sample_shape), generator=torch.Generator().manual_seed(0))
    wanted = torch.arange(n) % model.num_classes if model.num_classes else None

    floor = metric.evaluate(real_b, real, real_b, labels_b, labels_b)
    rows = [f"| real vs real (floor) | - | {floor['classifier_fd_floor']:.3f} | - | - | "
            f"{floor['classifier_accuracy_real']:.3f} | - |"]
    reference = None  # the FD of the first sampler (DDPM 1000 in the standard set), the yardstick
    for name, steps in samplers:
        start = time.perf_counter()
        x = model.sample(n, class_labels=wanted, sampler=name, num_inference_steps=steps, noise=noise,
                         guidance_scale=args.guidance_scale, generator=torch.Generator().manual_seed(1))
        seconds = time.perf_counter() - start
        scores = metric.evaluate(x.clamp(0, 1), real, real_b, wanted, labels_b)
        accuracy = f"{scores['classifier_accuracy']:.3f}" if "classifier_accuracy" in scores else "-"
        reference = scores["classifier_fd"] if reference is None else reference
        rows.append(f"| {name} | {steps} | {scores['classifier_fd']:.3f} | {scores['classifier_fd'] / reference:.2f} | "
                    f"{scores['classifier_kid']:.4f} | {accuracy} | {seconds:.1f} |")
    first = f"{samplers[0][0]} {samplers[0][1]}"
    table = "\n".join([
        f"| sampler | steps | classifier FD | FD / {first}'s | classifier KID | class accuracy | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |", *rows,
    ])
    guidance = model.hparams.guidance_scale if args.guidance_scale is None else args.guidance_scale
    details = (f"{n} samples (labels cycling over the classes, guidance {guidance}) against {n} held-out test images; "
               f"classifier {metric._checkpoint_file()}.")
    return publish("Image samplers", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
