"""Loading throughput of CelebFacesDataModule: the one-time decode into the cache, then images/s per epoch.

    python benchmarks/dataloader.py                        # 2000 generated 300x450 JPEG portraits
    python benchmarks/dataloader.py --dataset <parquet folder or hub id> --root data   # real data

With no dataset given it writes a parquet folder of generated portraits shaped like TMDB profile photos (this
machine cannot download ashraq/tmdb-celeb-10k), so the decode figure is for those JPEGs. Prints a table and
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
from PIL import Image

from report import publish

from lightning_diffusion.data import CelebFacesDataModule


def generated_portraits(folder: Path, n: int, width: int = 300, height: int = 450) -> Path:
    """n JPEG portraits of smooth random colour fields with the dataset's columns, as parquet under folder/data."""
    rng = np.random.default_rng(0)
    images, genders = [], []
    for i in range(n):
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


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="a parquet/save_to_disk folder or a hub id (default: generated)")
    parser.add_argument("--num_images", type=int, default=2000, help="generated portraits when --dataset is not given")
    parser.add_argument("--root", default=None, help="data root for the cache (default: a temporary folder)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--workers", nargs="*", type=int, default=[0, 2])
    parser.add_argument("--notes", default="notes/benchmarks.md", help="file to append the table to ('': none)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or str(generated_portraits(Path(tmp) / "portraits", args.num_images))
        root = args.root or str(Path(tmp) / "data")
        data = CelebFacesDataModule(dataset=dataset, root=root, num_val_samples=0 if args.num_images < 100 else 100,
                                    batch_size=args.batch_size)
        start = time.perf_counter()
        data.prepare_data()  # decode, crop, resize, cache: once
        decode_seconds = time.perf_counter() - start
        data.setup("fit")
        cached = len(data.train_dataloader().dataset) + len(data.val_dataloader().dataset)
        rows = [f"| decode + cache (once, {cached} kept faces) | - | {cached / decode_seconds:.0f} |"]
        for workers in args.workers:
            data.num_workers, data.persistent_workers = workers, False
            loader = data.train_dataloader()
            epoch_images_per_second(loader)  # warm-up epoch (worker start-up, page cache)
            rows.append(f"| train epoch from the cache | {workers} | {epoch_images_per_second(loader):.0f} |")
    table = "\n".join(["| stage | workers | images/s |", "| --- | --- | --- |", *rows])
    source = args.dataset or "generated 300x450 JPEG portraits"
    details = f"batch {args.batch_size}, 64x64, random flips; source: {source}."
    return publish("CelebFaces loading", argv, details, table, args.notes)


if __name__ == "__main__":
    main()
