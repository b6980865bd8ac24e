"""Small generated datasets with the real on-disk formats, so tests never download, and an exact denoiser."""

import gzip
import io
import pickle
import struct
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image


def fake_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0..9 cycling; each image black with a white 6x6 square whose position depends on the label."""
    labels = np.arange(n, dtype=np.uint8) % 10
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 2 * label, 20 - 2 * label
        images[i, row : row + 6, col : col + 6] = 255
        images[i, 27, 0] = 128  # one mid-grey pixel
    return images, labels


def write_idx(folder: Path, num_train: int = 300, num_test: int = 100, gz: bool = False) -> Path:
    """The four files torchvision's MNIST reads, in IDX format (big-endian magic, dims, then uint8 data)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", num_train), ("t10k", num_test)):
        images, labels = fake_digits(n)
        files = {
            f"{split}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes(),
            f"{split}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes(),
        }
        for name, data in files.items():
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def write_cifar10(folder: Path, per_batch: int = 40) -> Path:
    """The python-pickle batches torchvision's CIFAR10 reads (data_batch_1..5, test_batch, batches.meta).

    They cannot match CIFAR-10's checksums: tests that read them patch CIFAR10._check_integrity.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return folder


# gender codes: 0 unknown, 1 female, 2 male, 3 non-binary; 36 good rows, 12 of each kept gender, plus one corrupt
GENDERS = [0, 1, 2, 3, 1, 2] * 6
MODES = ["RGB", "L", "RGBA", "P"]
SIZES = [(48, 64), (60, 90)]  # (width, height): portraits
DARK, BRIGHT = 40, 215  # inside the center square: female dark, male bright; the bands above and below the opposite


def portrait(i: int, gender: int) -> bytes:
    width, height = SIZES[i % 2]
    inside, outside = (BRIGHT, DARK) if gender == 2 else (DARK, BRIGHT)
    pixels = np.full((height, width, 3), outside, dtype=np.uint8)
    top = (height - width) // 2
    pixels[top : top + width] = inside
    image, mode = Image.fromarray(pixels), MODES[i % 4]
    image = image.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mode in ("RGB", "L") else "PNG")
    return buffer.getvalue()


def make_dataset(genders=GENDERS, corrupt: bool = True, columns=("image", "gender")) -> datasets.Dataset:
    images = [{"bytes": portrait(i, g), "path": None} for i, g in enumerate(genders)]
    genders = list(genders)
    if corrupt:
        images.append({"bytes": b"certainly not an image", "path": None})
        genders.append(1)
    features = datasets.Features(
        {columns[0]: datasets.Image(), columns[1]: datasets.Value("int64"), "name": datasets.Value("string")}
    )
    data = {columns[0]: images, columns[1]: genders, "name": [f"person {i}" for i in range(len(genders))]}
    return datasets.Dataset.from_dict(data, features=features)


def write_parquet(folder: Path, dataset: datasets.Dataset) -> Path:
    """Two shards under folder/data, as `huggingface-cli download` lays out the Hub's parquet files."""
    (folder / "data").mkdir(parents=True)
    half = len(dataset) // 2
    dataset.select(range(half)).to_parquet(str(folder / "data" / "train-00000-of-00002.parquet"))
    dataset.select(range(half, len(dataset))).to_parquet(str(folder / "data" / "train-00001-of-00002.parquet"))
    return folder


class PointMassOracle(torch.nn.Module):
    """The exact eps of data that is a point mass at `target`: eps = (x_t - sqrt(a_t) x0*) / sqrt(1 - a_t).
    Timesteps are rounded, so the float timesteps of Euler work too."""

    def __init__(self, alphas_cumprod: torch.Tensor, target: torch.Tensor) -> None:
        super().__init__()
        self.alphas_cumprod, self.target = alphas_cumprod, target

    def forward(self, x_t, t, class_labels=None):
        from lightning_diffusion.formulations import (
            ddpm as diffusion,  # here: imported while conftest loads, lightning breaks caplog tests
        )

        alpha_bar = diffusion.alpha_bar_at(self.alphas_cumprod, t.round().long(), x_t)
        return (x_t - alpha_bar.sqrt() * self.target) / (1 - alpha_bar).sqrt()


# write_image_folder: each class's images, in the order ImageFolderDataModule lists them (sorted, subfolders after
# the files of a folder as os.walk goes), and the value every pixel of each decodes to (RGB, one per channel)
FOLDER_CAT = ["a_rgb.jpg", "b_gray.png", "c_gray_alpha.png", "d_palette.png", "e_rgba.png", "f_cmyk.jpg"]
FOLDER_CAT += ["g_16bit.png", "h_exif.jpg", "nested/i_deep.png"]
FOLDER_DOG = [f"dog_{i}.png" for i in range(5)]
FOLDER_SKIPPED = ["cat/broken.png", "dog/truncated.jpg"]  # undecodable: named in the one line


def write_image_folder(root: Path) -> Path:
    """A folder with every awkward case: cat/ holds one image per mode (L, LA, P with transparency, RGBA, CMYK,
    16-bit, EXIF-rotated) and a nested one, dog/ plain PNGs; beside them a non-image, hidden files and a hidden
    folder, an image at the top, a corrupt and a truncated image, and an empty class folder."""
    cat, dog = root / "cat", root / "dog"
    for folder in (cat / "nested", dog, root / "empty", root / ".thumbnails"):
        folder.mkdir(parents=True, exist_ok=True)
    grey = np.full((24, 32), 100, dtype=np.uint8)  # 32 wide, 24 high: cropped to the middle 24x24
    Image.fromarray(np.full((24, 32, 3), 200, dtype=np.uint8)).save(cat / "a_rgb.jpg", quality=95)
    Image.fromarray(grey).save(cat / "b_gray.png")
    Image.fromarray(np.stack([grey, np.zeros_like(grey)], -1), "LA").save(cat / "c_gray_alpha.png")  # transparent
    palette = Image.fromarray(grey).convert("P")
    palette.info["transparency"] = 100  # the palette index of the grey: transparent
    palette.save(cat / "d_palette.png")
    Image.fromarray(np.full((24, 32, 4), (0, 0, 255, 255), dtype=np.uint8), "RGBA").save(cat / "e_rgba.png")
    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(cat / "f_cmyk.jpg", quality=95)  # red
    Image.fromarray(np.full((24, 32), 40_000, dtype=np.uint16)).save(cat / "g_16bit.png")  # 40,000 >> 8 = 156
    # stored 32 wide, 24 high with its top half white; EXIF orientation 6 shows it turned a quarter clockwise: the
    # white half on the right of the 24 wide, 32 high picture
    stored = np.zeros((24, 32, 3), dtype=np.uint8)
    stored[:12] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(cat / "h_exif.jpg", exif=exif, quality=95)
    Image.fromarray(grey).save(cat / "nested" / "i_deep.png")
    for i, name in enumerate(FOLDER_DOG):
        Image.fromarray(np.full((24, 24, 3), 10 * i, dtype=np.uint8)).save(dog / name)
    (cat / "broken.png").write_bytes(b"certainly not an image")
    (dog / "truncated.jpg").write_bytes((cat / "a_rgb.jpg").read_bytes()[:300])
    (dog / "notes.txt").write_text("not an image")
    (dog / ".hidden.png").write_bytes((dog / "dog_0.png").read_bytes())
    (root / ".thumbnails" / "dog_0.png").write_bytes((dog / "dog_0.png").read_bytes())
    (root / "empty" / "README.md").write_text("no images here")
    (root / "top.png").write_bytes((dog / "dog_0.png").read_bytes())  # not in a class folder
    return root
