"""Sample quality and wall time of samplers on a trained image checkpoint, scored by the offline classifier
(configs/mnist_classifier.yaml): a table made by `python -m lightning_diffusion evaluate`.

    python benchmarks/samplers_images.py --ckpt outputs/mnist_cond/version_0/checkpoints/last.ckpt \
        --classifier outputs/mnist_classifier

Prints classifier Frechet distance (with its real-vs-real floor), KID and class-conditional accuracy per sampler
against held-out test images of the checkpoint's own data config (as evaluate's --reference held_out: the first n
score the samples, the next n give the floor), mean ± standard deviation over --num_seeds sample seeds, and appends
the table with the command and the machine to notes/benchmarks.md. Every sampler starts from the same x_T (one
generator per seed) and asks for the same labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from report import publish
from samplers_2d import parse_samplers, run_evaluate, spread  # the same sampler set and evaluate call as the 2D table


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--classifier", required=True, help="classifier checkpoint, run folder or experiment folder")
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--num_seeds", type=int, default=1, help="sample seeds per sampler: the ± spread")
    parser.add_argument("--guidance_scale", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--samplers", nargs="*", default=None, help="NAME:STEPS pairs (default: the standard set)")
    parser.add_argument("--output_dir", default=None, help="evaluate's --output_dir (default: beside the run)")
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)
    samplers = parse_samplers(args.samplers)
    options = [
        "--num_samples",
        str(args.num_samples),
        "--num_seeds",
        str(args.num_seeds),
        "--classifier",
        args.classifier,
        "--inception_weights",
        "null",
    ]
    options += ["--guidance", f"[{args.guidance_scale}]"] if args.guidance_scale is not None else []
    options += ["--output_dir", args.output_dir] if args.output_dir else []
    rows, folder = run_evaluate(args.ckpt, samplers, options)

    reference = rows[0]["classifier_fd"]  # the first sampler's FD (DDPM 1000 in the standard set), the yardstick
    floor = rows[0]
    accuracy_real = f"{floor['classifier_accuracy_real']:.3f}" if "classifier_accuracy_real" in floor else "-"
    lines = [
        f"| real vs real (floor) | - | {floor['classifier_fd_floor']:.3f} | - | {floor['classifier_kid_floor']:.4f} "
        f"| {accuracy_real} | - | - |"
    ]
    for row in rows:
        accuracy = spread(row, "classifier_accuracy", 3) if row.get("classifier_accuracy") is not None else "-"
        lines.append(
            f"| {row['sampler']} | {row['steps']} | {spread(row, 'classifier_fd', 3)} | "
            f"{row['classifier_fd'] / reference:.2f} | {spread(row, 'classifier_kid', 4)} | {accuracy} | "
            f"{row['nfe']} | {row['seconds'] / row['seeds']:.1f} |"
        )
    first = f"{samplers[0][0]} {samplers[0][1]}"
    table = "\n".join(
        [
            f"| sampler | steps | classifier FD | FD / {first}'s | classifier KID | class accuracy | NFE "
            "| seconds per seed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *lines,
        ]
    )
    guidance = rows[0]["guidance"]
    details = (
        f"{args.num_samples} samples (the classes of the held-out images they are compared with, guidance "
        f"{guidance}) against {args.num_samples} held-out test images, mean ± standard deviation over "
        f"{args.num_seeds} sample seeds; classifier {args.classifier}; {folder}."
    )
    return publish("Image samplers", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
