"""CelebFacesDataModule (HubImageDataModule with tmdb's columns and gender map) on a generated local dataset with the
real columns: no network, a few dozen tiny images."""

import logging
from pathlib import Path

import datasets
import huggingface_hub
import pytest
import torch
from helpers.fakes import BRIGHT, DARK, GENDERS, make_dataset, write_parquet

from lightning_diffusion.data.celeb import CelebFacesDataModule


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network in any test: the Hub's offline mode, which datasets and huggingface_hub read at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> datasets.Dataset:
    return make_dataset()


@pytest.fixture
def parquet_dir(tmp_path, source) -> Path:
    return write_parquet(tmp_path / "celeb_parquet", source)


@pytest.fixture
def rank_zero_log(caplog):
    """rank_zero_info's logger does not propagate to the root, where caplog listens: listen on it directly."""
    import lightning_utilities.core.rank_zero as rank_zero

    rank_zero.log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    rank_zero.log.removeHandler(caplog.handler)


def make(dataset, root, **kwargs) -> CelebFacesDataModule:
    kwargs = {"num_val_samples": 6, "batch_size": 8, **kwargs}
    dm = CelebFacesDataModule(dataset=str(dataset), root=str(root), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def all_rows(dm: CelebFacesDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dm.splits[s][i] for s in ("train", "val") for i in range(len(dm.splits[s]))), strict=False)
    return torch.stack(xs), torch.stack(ys)


def test_contract_before_setup():
    dm = CelebFacesDataModule(dataset="/nonexistent", root="/nonexistent")  # nothing is read
    assert dm.sample_shape == (3, 64, 64) and dm.num_classes == 2 and dm.class_names == ["female", "male"]
    assert dm.data_mean == dm.data_std == [0.5, 0.5, 0.5]
    dm = CelebFacesDataModule(image_size=32, labels=False)
    assert dm.sample_shape == (3, 32, 32) and dm.num_classes is None and dm.class_names is None


def test_filter_labels_crop_and_batches(parquet_dir, tmp_path, rank_zero_log):
    dm = make(parquet_dir, tmp_path / "data")
    assert "kept 24 images of 37 rows (12 dropped by label_map, 1 undecodable)" in rank_zero_log.text
    assert len(dm.splits["train"]) == 18 and len(dm.splits["val"]) == 6
    x, y = all_rows(dm)
    assert (y == 0).sum() == 12 and (y == 1).sum() == 12  # genders 0 and 3 dropped, the corrupt female skipped
    # female (gender 1 -> 0) dark, male (gender 2 -> 1) bright, and the center square only: no band at top or bottom
    level = {0: DARK / 127.5 - 1, 1: BRIGHT / 127.5 - 1}
    for label in (0, 1):
        faces = x[y == label]
        assert torch.allclose(faces.mean(dim=(1, 2, 3)), torch.tensor(level[label]), atol=0.05)
        assert torch.allclose(faces[:, :, :3].mean(), torch.tensor(level[label]), atol=0.1)  # top rows
        assert torch.allclose(faces[:, :, -3:].mean(), torch.tensor(level[label]), atol=0.1)  # bottom rows
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, tuple) and len(batch) == 2
    assert batch[0].shape == (8, 3, 64, 64) and batch[0].dtype == torch.float32 and batch[1].shape == (8,)
    assert batch[0].min() >= -1 and batch[0].max() <= 1
    assert len(dm.train_dataloader()) == 2  # 18 // 8: drop_last
    val = list(dm.val_dataloader())
    assert [len(b[0]) for b in val] == [6] and len(list(dm.test_dataloader())) == 1


def test_unlabelled_batches_and_size(parquet_dir, tmp_path):
    dm = make(parquet_dir, tmp_path / "data", labels=False, image_size=16, random_flip=False)
    (x,) = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_split_is_deterministic_and_the_decoded_cache_is_reused(parquet_dir, tmp_path):
    root = tmp_path / "data"
    first = make(parquet_dir, root)
    _, decoded = first._decoded()
    files = sorted(f["filename"] for f in decoded.cache_files)
    assert files and all(f.startswith(str(root / "raw" / "hf")) for f in files)  # datasets' cache, under root
    stamps = {f: Path(f).stat().st_mtime_ns for f in files}

    # a new instance with the same options reads datasets' cache back: the same files, none written again
    same = make(parquet_dir, root)
    assert sorted(f["filename"] for f in same._decoded()[1].cache_files) == files
    assert {f: Path(f).stat().st_mtime_ns for f in files} == stamps
    assert torch.equal(same.splits["val"].indices, first.splits["val"].indices)
    assert torch.equal(all_rows(same)[0], all_rows(first)[0])
    other = make(parquet_dir, root, seed=1)
    assert not torch.equal(other.splits["val"].indices, first.splits["val"].indices)
    assert sorted(f["filename"] for f in other._decoded()[1].cache_files) == files  # the seed is not in the cache


def test_save_to_disk_folder(source, tmp_path):
    source.save_to_disk(str(tmp_path / "saved"))
    dm = make(tmp_path / "saved", tmp_path / "data")
    _, y = all_rows(dm)
    assert (y == 0).sum() == 12 and (y == 1).sum() == 12


def test_missing_columns(tmp_path):
    folder = write_parquet(tmp_path / "bad", make_dataset(GENDERS[:6], corrupt=False, columns=("picture", "gender")))
    with pytest.raises(ValueError, match=r"no image column \(found: picture, gender, name\)"):
        make(folder, tmp_path / "data")


def test_nothing_left_after_filtering(tmp_path):
    folder = write_parquet(tmp_path / "unknown", make_dataset([0, 3, 0, 3], corrupt=False))
    with pytest.raises(ValueError, match=r"no row of .* has a gender in label_map \{1: 0, 2: 1\} \(found \[0, 3\]\)"):
        make(folder, tmp_path / "data")


def test_not_a_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a folder of parquet files nor a datasets.save_to_disk"):
        make(tmp_path / "empty", tmp_path / "data")


def test_offline_hub_id_without_cache(tmp_path):
    """The one sentence of HubImageDataModule, for every Hub id."""
    with pytest.raises(FileNotFoundError) as error:
        make("nobody/nothing-here", tmp_path / "data")
    message = str(error.value)
    assert message.startswith("could not load 'nobody/nothing-here' from the Hugging Face Hub")
    assert "run once with internet" in message and "save_to_disk" in message and "parquet" in message
    assert "\n" not in message and message.count(". ") == 0 and message.endswith(".")
