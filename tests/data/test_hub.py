"""HubImageDataModule on a local parquet dataset with its own column names and a label map: no network."""

import datasets
import huggingface_hub
import pytest
import torch
from helpers.fakes import BRIGHT, DARK, GENDERS, make_dataset, write_parquet

from lightning_diffusion.data import HubImageDataModule


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def make(folder, root, **kwargs) -> HubImageDataModule:
    kwargs = {"image_size": 8, "num_val_samples": 4, "batch_size": 4, "random_flip": False, **kwargs}
    dm = HubImageDataModule(dataset=str(folder), root=str(root), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_own_columns_and_a_label_map(tmp_path):
    folder = write_parquet(tmp_path / "people", make_dataset(columns=("picture", "sex")))
    dm = make(
        folder,
        tmp_path / "data",
        image_column="picture",
        label_column="sex",
        label_map={1: 0, 2: 1},
        class_names=["female", "male"],
    )
    assert dm.num_classes == 2 and dm.class_names == ["female", "male"] and dm.sample_shape == (3, 8, 8)
    rows = [dm.splits[s][i] for s in ("train", "val") for i in range(len(dm.splits[s]))]
    kept = sum(g in (1, 2) for g in GENDERS)  # genders 0 and 3 dropped; the corrupt image (gender 1) skipped
    assert len(rows) == kept == 24 and len(dm.splits["val"]) == 4
    labels = torch.stack([y for _, y in rows])
    assert labels.bincount().tolist() == [12, 12]
    for x, y in rows:  # the center of a female portrait is dark, of a male one bright: labels travel with images
        center = (x[:, 4, 4] + 1) * 127.5
        assert abs(center.mean().item() - (BRIGHT if y == 1 else DARK)) < 20
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 8, 8) and y.dtype == torch.long


def test_unconditional_grayscale_and_bad_columns(tmp_path):
    folder = write_parquet(tmp_path / "people", make_dataset(corrupt=False))
    dm = make(folder, tmp_path / "data", channels=1)
    assert dm.num_classes is None and len(dm.splits["train"][0]) == 1 and dm.splits["train"][0][0].shape == (1, 8, 8)
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == len(GENDERS)
    with pytest.raises(ValueError, match="has no photo column .*found: image, gender, name"):
        make(folder, tmp_path / "data", image_column="photo")
    with pytest.raises(ValueError, match="label_column and class_names go together"):
        HubImageDataModule(dataset=str(folder), label_column="gender")
