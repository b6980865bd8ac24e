"""Loading throughput of the image configs' data: CelebFacesDataModule's one-time decode into the cache, then
images/s per training epoch of it, of the same faces as litdata shards (StreamingImageDataModule) and of
TorchvisionDataModule (as configs/celeb_cond.yaml and configs/mnist_cond.yaml
load them).

    python benchmarks/dataloader.py                        # generated portraits and digits
    python benchmarks/dataloader.py --dataset <parquet folder or hub id> --root data --mnist_root data   # real data

With no dataset given it writes a parquet folder of generated portraits shaped like TMDB profile photos (this
machine cannot download ashraq/tmdb-celeb-10k), so the decode figure is for those JPEGs; without --mnist_root it
writes random 28x28 digits as IDX files (MNIST's per-image cost does not depend on the pixels). Prints a table and
appends it, with the command and the machine, to notes/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
from mnist_5k import write_idx
from PIL import Image
from report import publish

from lightning_diffusion.data import CelebFacesDataModule, StreamingImageDataModule, TorchvisionDataModule
from lightning_diffusion.tools.prepare import prepare


def generated_portraits(folder: Path, n: int, width: int = 300, height: int = 450) -> Path:
    """n JPEG portraits of smooth random colour fields with the dataset's columns, as parquet under folder/data."""
    rng = np.random.default_rng(0)
    images, genders = [], []
    for _i in range(n):
        field = rng.integers(0, 256, (height // 30, width // 30, 3), dtype=np.uint8)
        image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append({"bytes": buffer.getvalue(), "path": None})
        genders.append(int(rng.integers(0, 4)))
    features = datasets.Features({"image": datasets.Image(), "gender": datasets.Value("int64")})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict({"image": images, "gender": genders}, features=features).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet")
    )
    return folder


def epoch_images_per_second(loader) -> float:
    start, n = time.perf_counter(), 0
    for x, *_ in loader:
        n += len(x)
    return n / (time.perf_counter() - start)


def generated_digits(root: Path, n: int) -> Path:
    """n random 28x28 digits (and n // 6 test ones) as MNIST IDX files under root/MNIST/raw."""
    rng = np.random.default_rng(0)
    num_test = n // 6
    images = rng.integers(0, 256, (n + num_test, 28, 28), dtype=np.uint8)
    write_idx(root / "MNIST" / "raw", images, rng.integers(0, 10, n + num_test, dtype=np.uint8), num_test)
    return root


def epochs(data, workers: list[int], stage: str) -> list[str]:
    """A table row per worker count: images/s of a training epoch, after a warm-up epoch."""
    rows = []
    for num_workers in workers:
        data.num_workers, data.persistent_workers = num_workers, False
        loader = data.train_dataloader()
        epoch_images_per_second(loader)  # warm-up epoch (worker start-up, page cache)
        rows.append(f"| {stage} | {num_workers} | {epoch_images_per_second(loader):.0f} |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", default=None, help="a parquet/save_to_disk folder or a hub id (default: generated)"
    )
    parser.add_argument("--num_images", type=int, default=2000, help="generated portraits when --dataset is not given")
    parser.add_argument("--root", default=None, help="data root for the cache (default: a temporary folder)")
    parser.add_argument("--batch_size", type=int, default=64, help="CelebFaces batch (configs/celeb_cond.yaml's)")
    parser.add_argument("--mnist_root", default=None, help="a data root with MNIST (default: generated digits)")
    parser.add_argument("--num_digits", type=int, default=10000, help="generated digits without --mnist_root")
    parser.add_argument("--mnist_batch_size", type=int, default=128, help="configs/mnist_cond.yaml's")
    parser.add_argument("--workers", nargs="*", type=int, default=[0, 2])
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or str(generated_portraits(Path(tmp) / "portraits", args.num_images))
        root = args.root or str(Path(tmp) / "data")
        data = CelebFacesDataModule(
            dataset=dataset, root=root, num_val_samples=0 if args.num_images < 100 else 100, batch_size=args.batch_size
        )
        start = time.perf_counter()
        data.prepare_data()  # decode, crop, resize, cache: once
        decode_seconds = time.perf_counter() - start
        data.setup("fit")
        cached = len(data.train_dataloader().dataset) + len(data.val_dataloader().dataset)
        rows = [f"| CelebFaces: decode + cache (once, {cached} kept faces) | - | {cached / decode_seconds:.0f} |"]
        rows += epochs(data, args.workers, "CelebFaces: train epoch from the cache")
        start = time.perf_counter()
        shards = prepare(data, Path(tmp) / "shards", workers=max(args.workers + [1]))  # the same images as chunks
        rate = cached / (time.perf_counter() - start)
        rows += [f"| CelebFaces: prepare litdata shards (once, {cached} faces) | - | {rate:.0f} |"]
        stream = StreamingImageDataModule(str(shards), batch_size=args.batch_size)
        rows += epochs(stream, args.workers, "CelebFaces: train epoch from litdata shards")

        mnist_root = args.mnist_root or str(generated_digits(Path(tmp) / "digits", args.num_digits))
        digits = TorchvisionDataModule(
            root=mnist_root,
            download=False,
            labels=True,
            pad_to_32=True,
            num_val_samples=0,
            batch_size=args.mnist_batch_size,
        )  # the epoch: every training digit
        digits.prepare_data()
        digits.setup("fit")
        rows += epochs(digits, args.workers, f"MNIST: train epoch ({len(digits.train_dataloader().dataset)} digits)")
    table = "\n".join(["| stage | workers | images/s |", "| --- | --- | --- |", *rows])
    celeb = args.dataset or "generated 300x450 JPEG portraits"
    details = (
        f"CelebFaces: batch {args.batch_size}, 64x64, random flips, source {celeb}; MNIST: batch "
        f"{args.mnist_batch_size}, padded to 32x32, source {args.mnist_root or 'generated digits'}."
    )
    return publish("Data loading", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
