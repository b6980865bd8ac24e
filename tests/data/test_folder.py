"""ImageFolderDataModule on a generated folder with every awkward case a real folder holds."""

import logging
import os

import pytest
import torch
from conftest import REPO
from helpers.fakes import FOLDER_CAT, FOLDER_DOG, FOLDER_SKIPPED, write_image_folder
from PIL import Image

from lightning_diffusion.data import folder as folder_module
from lightning_diffusion.data.folder import ImageFolderDataModule

# what every pixel of each image of write_image_folder decodes to (RGB); h_exif.jpg: its columns, left and right
CAT_PIXELS = [(200,) * 3, (100,) * 3, (255,) * 3, (255,) * 3, (0, 0, 255), (255, 0, 0), (156,) * 3, None, (100,) * 3]
DOG_PIXELS = [(10 * i,) * 3 for i in range(len(FOLDER_DOG))]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("images") / "photos")


@pytest.fixture
def rank_zero_log(caplog):
    """rank_zero_info's logger does not propagate to the root, where caplog listens: listen on it directly."""
    import lightning_utilities.core.rank_zero as rank_zero

    rank_zero.log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    rank_zero.log.removeHandler(caplog.handler)


def make(root, cache_dir, **kwargs) -> ImageFolderDataModule:
    kwargs = {"image_size": 8, "num_val_samples": 2, "batch_size": 4, **kwargs}
    dm = ImageFolderDataModule(root=str(root), cache_dir=str(cache_dir), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def in_order(dm):
    """Every decoded image (uint8 HWC) and label in the order of the files, from both splits."""
    rows = {}
    for split in ("train", "val"):
        data = dm.splits[split]
        for i, row in enumerate(data.indices.tolist()):
            item = data[i]
            rows[row] = (((item[0] + 1) * 127.5).round().byte().permute(1, 2, 0), item[1] if len(item) > 1 else None)
    return [rows[i] for i in sorted(rows)]


def test_every_awkward_case_loads_with_its_class(image_folder, tmp_path, rank_zero_log):
    dm = make(image_folder, tmp_path / "cache")
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2 and dm.sample_shape == (3, 8, 8)
    rows = in_order(dm)  # cat's 9 images (any mode, nested too), dog's 5; no hidden, empty/, top.png or non-image
    assert [label.item() for _, label in rows] == [0] * len(FOLDER_CAT) + [1] * len(FOLDER_DOG)
    for (image, _), expected, name in zip(rows, CAT_PIXELS + DOG_PIXELS, FOLDER_CAT + FOLDER_DOG, strict=True):
        if expected is None:  # EXIF-rotated: the white half on the right
            assert image[:, :3].max() < 30 and image[:, 5:].min() > 225, name
        else:
            assert (image.int() - torch.tensor(expected)).abs().max() <= 3, (name, image[0, 0])
    (line,) = {r.getMessage() for r in rank_zero_log.records if "ImageFolder" in r.getMessage()}
    assert line.startswith(f"ImageFolder: 14 images of 2 classes (cat, dog) from {image_folder}, cached in ")
    assert line.endswith(f"skipped 2 unreadable: {', '.join(FOLDER_SKIPPED)}")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert len(dm.splits["train"]) == 12 and len(dm.splits["val"]) == 2


def test_grayscale_and_unlabelled(image_folder, tmp_path):
    dm = make(image_folder, tmp_path / "cache", channels=1, labels=False)
    assert dm.class_names is None and dm.num_classes is None and dm.sample_shape == (1, 8, 8)
    assert dm.data_mean == [0.5] and len(dm.splits["train"][0]) == 1  # (x,): no label
    rows = in_order(dm)
    assert len(rows) == 15  # every image under the root: top.png (the root's files come first) too
    red = dict(zip(FOLDER_CAT, rows[1:10], strict=True))["f_cmyk.jpg"][0]
    assert red.shape == (8, 8, 1) and abs(int(red[0, 0, 0]) - 76) <= 3  # L = 0.299 R


def test_a_flat_folder_is_unconditional(tmp_path):
    for i in range(3):
        Image.new("RGB", (10, 10), (i, i, i)).save(tmp_path / f"{i}.png")
    dm = make(tmp_path, tmp_path / "cache", num_val_samples=1)
    assert dm.class_names is None and len(dm.splits["train"]) == 2


def test_the_cache_is_reused_and_a_changed_folder_decoded_anew(tmp_path, monkeypatch):
    root, cache_dir = write_image_folder(tmp_path / "photos"), tmp_path / "cache"
    first = make(root, cache_dir)
    (cache,) = cache_dir.iterdir()  # one file, no temporary left over
    assert str(cache) == first.cache_path and "_8px_3ch_" in cache.name
    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "square", lambda *args: pytest.fail("decoded again despite the cache"))
        assert len(make(root, cache_dir).splits["train"]) == 12
    Image.new("RGB", (10, 10)).save(root / "dog" / "dog_5.png")
    second = make(root, cache_dir)
    assert second.cache_path != first.cache_path and len(second.splits["train"]) == 13
    assert [p.name for p in cache_dir.iterdir()] == [os.path.basename(second.cache_path)]  # the stale one is gone


def test_no_images_is_one_sentence_before_training(tmp_path, run_cli, capsys):
    (tmp_path / "empty" / "class").mkdir(parents=True)
    (tmp_path / "empty" / "class" / "notes.txt").write_text("no images")
    with pytest.raises(ValueError, match=r"holds no image files .*: point data.init_args.root at a folder"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).prepare_data()
    (tmp_path / "empty" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="none of the 1 image files .* could be decoded"):
        make(tmp_path / "empty", tmp_path / "cache")
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", str(REPO / "configs/folder.yaml"), "--data.init_args.root", str(tmp_path / "none"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: ImageFolder: {tmp_path / 'none'} is not a folder: set data.init_args.root to one."
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
    with pytest.raises(ValueError, match=r"num_val_samples \(20\) must be below the 14 images"):
        make(write_image_folder(tmp_path / "photos"), tmp_path / "cache", num_val_samples=20)
