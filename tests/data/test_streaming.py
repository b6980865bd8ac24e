"""prepare and StreamingImageDataModule on a generated folder: the shards hold what the in-memory module holds,
the shuffle follows the seed and the epoch, and bad input is one sentence. DDP, resume and memory:
test_streaming_ddp.py."""

import json

import lightning as L
import pytest
import torch
from helpers.streaming import folder_module, numbered_shards, numbers, write_numbered_folder

from lightning_diffusion.__main__ import main
from lightning_diffusion.data import StreamingImageDataModule
from lightning_diffusion.tools.prepare import prepare


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return numbered_shards(tmp_path_factory.mktemp("streaming"), n=60, num_val_samples=4, workers=2)


def stream(shards, **kwargs) -> StreamingImageDataModule:
    return StreamingImageDataModule(str(shards), **{"batch_size": 8, "random_flip": False, **kwargs})


def all_of(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_the_shards_hold_the_in_memory_images_and_labels(shards):
    memory = folder_module(shards.parent / "photos", shards.parent / "cache")
    data = stream(shards)
    assert data.sample_shape == memory.sample_shape == (3, 16, 16)
    assert data.class_names == ["a", "b"] and data.num_classes == 2 and data.data_mean == [0.5] * 3
    assert json.loads((shards / "metadata.json").read_text())["num_samples"] == {"train": 56, "val": 4}
    for split, loader in (("train", data.train_dataloader()), ("val", data.val_dataloader())):
        rows = memory.splits[split]
        expected = {numbers(rows[i][0][None])[0]: rows[i] for i in range(len(rows))}
        x, y = all_of(loader)
        kept = len(rows) // 8 * 8 if split == "train" else len(rows)  # drop_last in training only
        assert len(x) == kept and len(set(numbers(x))) == kept
        for n, xi, yi in zip(numbers(x), x, y, strict=True):
            assert torch.equal(xi, expected[n][0]) and yi == expected[n][1], n  # bit for bit, the label with it
        assert [y_ == n % 2 for n, y_ in zip(numbers(x), y.tolist(), strict=True)] == [True] * kept
    assert len(data.train_dataloader()) == 7


def test_each_epoch_is_shuffled_anew_from_the_seed(shards):
    loader = stream(shards, seed=3).train_dataloader()
    first, second = numbers(all_of(loader)[0]), numbers(all_of(loader)[0])
    assert sorted(first) == sorted(second) and first != second  # the same images, another order
    again = stream(shards, seed=3).train_dataloader()
    assert numbers(all_of(again)[0]) == first and numbers(all_of(again)[0]) == second
    assert numbers(all_of(stream(shards, seed=4).train_dataloader())[0]) != first


def test_the_prepare_command_and_its_one_sentence_errors(tmp_path, shards, capsys):
    root = write_numbered_folder(tmp_path / "photos", n=12)
    command = ["prepare", "--config", "configs/folder.yaml", "--data.init_args.root", str(root)]
    command += ["--data.init_args.image_size", "16", "--data.init_args.num_val_samples", "4"]
    command += ["--data.init_args.cache_dir", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "outputs")]
    folder = main([*command, "--shards", str(tmp_path / "made"), "--workers", "1"])
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "train", "val"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    assert not (tmp_path / "outputs").exists()  # no run: no run folder, no logger's files
    assert len(stream(folder).train_dataloader()) == 1  # 8 training images in one batch
    for shards_arg, message in (
        (str(shards), f"error: {shards} already exists and is not empty: prepare into a new folder."),
        (str(tmp_path / "other"), "error: --workers must be at least 1, got 0."),
    ):
        with pytest.raises(SystemExit):
            main([*command, "--shards", shards_arg, "--workers", "0"])
        assert capsys.readouterr().err.strip().splitlines()[-1] == message
    with pytest.raises(FileNotFoundError, match=r"holds no readable metadata.json .*: point data.init_args.shards"):
        _ = stream(tmp_path / "nothing").sample_shape


def test_validation_gives_every_rank_its_part_of_a_small_set(shards, monkeypatch):
    """litdata splits a set over the ranks in whole batches: 4 validation images in batches of 8 on 2 ranks would
    leave a rank without a batch (Lightning stops). Each rank reads 2 of them here (ranks faked, no processes)."""
    from litdata.utilities.env import _DistributedEnv

    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(_DistributedEnv, "detect", classmethod(lambda cls, rank=rank: cls(2, rank, 1)))
        loader = stream(shards).val_dataloader()
        x, _ = all_of(loader)
        assert len(loader) == 1 and len(x) == 2, (rank, len(loader), len(x))
        parts.append(numbers(x))
    assert len(set(parts[0] + parts[1])) == 4


def test_shards_without_a_validation_split_are_one_sentence_unless_validation_is_off(tmp_path):
    photos = folder_module(write_numbered_folder(tmp_path / "photos", n=8), tmp_path / "cache", num_val_samples=0)
    data = prepare(photos, tmp_path / "shards")
    assert sorted(p.name for p in data.iterdir()) == ["metadata.json", "train"]
    message = rf"^{data} holds no validation split \(prepared with num_val_samples 0\): set trainer.limit_val_batches"
    for stage, limit in (("fit", 1.0), ("validate", 0), ("test", 0)):
        module = stream(data)
        module.trainer = L.Trainer(limit_val_batches=limit, logger=False, enable_checkpointing=False)
        with pytest.raises(ValueError, match=message):
            module.setup(stage)
    module = stream(data)
    module.trainer = L.Trainer(limit_val_batches=0, logger=False, enable_checkpointing=False)
    module.setup("fit")  # training without validation
    assert len(all_of(module.train_dataloader())[0]) == 8
