import pytest
import torch
from helpers.fakes import fake_digits as fake_images
from helpers.fakes import write_idx

from lightning_diffusion.data.torchvision_sets import TorchvisionDataModule

NUM_TRAIN, NUM_TEST = 300, 100


@pytest.fixture
def mnist_root(tmp_path):
    write_idx(tmp_path / "MNIST" / "raw")
    return tmp_path


def make(root, **kwargs) -> TorchvisionDataModule:
    kwargs = {"num_val_samples": 50, "batch_size": 32, "download": False, **kwargs}
    dm = TorchvisionDataModule(root=str(root), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_contract_before_setup():
    dm = TorchvisionDataModule(root="/nonexistent")  # nothing is read
    assert dm.sample_shape == (1, 28, 28) and dm.num_classes is None
    assert dm.data_mean == [0.5] and dm.data_std == [0.5] and dm.class_names is None
    dm = TorchvisionDataModule(root="/nonexistent", pad_to_32=True, labels=True)
    assert dm.sample_shape == (1, 32, 32) and dm.num_classes == 10 and dm.class_names == [str(d) for d in range(10)]
    dm = TorchvisionDataModule(root="/nonexistent", dataset="cifar10", labels=True)
    assert dm.sample_shape == (3, 32, 32) and dm.num_classes == 10
    assert dm.data_mean == [0.5] * 3 and dm.data_std == [0.5] * 3 and dm.class_names[0] == "airplane"
    assert TorchvisionDataModule(dataset="fashion_mnist", labels=True).class_names[-1] == "Ankle boot"
    with pytest.raises(ValueError, match="Unknown image dataset 'svhn'"):
        TorchvisionDataModule(dataset="svhn")


def test_batches_in_model_space(mnist_root):
    dm = make(mnist_root)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, tuple) and len(batch) == 1  # no labels
    x = batch[0]
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    # exact pixel mapping: 0 -> -1, 255 -> 1, 128 -> 128 / 255 * 2 - 1; data space is x * std + mean
    val = torch.cat([b[0] for b in dm.val_dataloader()])
    images, _ = fake_images(NUM_TRAIN)
    expected = torch.from_numpy(images[dm.splits["val"].indices]).float().div(255).unsqueeze(1)
    assert torch.allclose(val * 0.5 + 0.5, expected, atol=1e-6)
    assert abs(val[0, 0, 27, 0].item() - (128 / 255 * 2 - 1)) < 1e-6
    assert set(val.unique().tolist()) <= {-1.0, 1.0, val[0, 0, 27, 0].item()}


def test_padding_uses_the_background(mnist_root):
    x = next(iter(make(mnist_root, pad_to_32=True).val_dataloader()))[0]
    assert x.shape == (32, 1, 32, 32)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, :, border] == -1).all() and x.max() == 1.0
    unpadded = next(iter(make(mnist_root).val_dataloader()))[0]
    assert torch.equal(x[:, :, 2:30, 2:30], unpadded)


def test_labels(mnist_root):
    dm = make(mnist_root, labels=True)
    x, y = next(iter(dm.train_dataloader()))
    assert y.dtype == torch.long and y.shape == (32,) and 0 <= y.min() and y.max() <= 9
    # each label's square sits at its own place: the labels travel with their images
    for image, label in zip(x, y.tolist(), strict=False):
        assert image[0, 2 * label, 20 - 2 * label] == 1.0
    assert dm.num_classes == 10


def test_splits(mnist_root):
    dm = make(mnist_root)
    train, val, test = (dm.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (NUM_TRAIN - 50, 50, NUM_TEST)
    assert sorted(train.indices + val.indices) == list(range(NUM_TRAIN))  # disjoint, together the official split
    # drop_last in training, everything in evaluation
    assert sum(len(b[0]) for b in dm.train_dataloader()) == (NUM_TRAIN - 50) // 32 * 32
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 50
    assert sum(len(b[0]) for b in dm.test_dataloader()) == NUM_TEST
    assert make(mnist_root).splits["val"].indices == val.indices  # same seed, same split
    assert make(mnist_root, seed=1).splits["val"].indices != val.indices
    with pytest.raises(ValueError, match="num_val_samples"):
        make(mnist_root, num_val_samples=NUM_TRAIN)


def test_loader_options(mnist_root):
    dm = make(mnist_root, pin_memory=True, persistent_workers=True)
    loader = dm.train_dataloader()
    assert loader.pin_memory and not loader.persistent_workers  # persistent workers need workers
    assert loader.drop_last and not dm.val_dataloader().drop_last


def test_random_flip_only_in_training(mnist_root):
    """The flips are drawn on the batch (after the transfer to the device), and only while training."""
    torch.manual_seed(0)
    dm = make(mnist_root, random_flip=True, num_val_samples=0, batch_size=NUM_TRAIN - 1)
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], batch[0])  # no trainer, not training: no flips
    dm.trainer = type("Training", (), {"training": True})()
    flipped = dm.on_after_batch_transfer(batch, 0)[0]
    # a label-0 image's square is at columns 20..25; flipped it is at 2..7
    assert (flipped[:, 0, 0:6, 20] == 1).any() and (flipped[:, 0, 0:6, 7] == 1).any()
    kept = (flipped == batch[0]).flatten(1).all(1)
    assert 0.3 < kept.float().mean() < 0.7  # a coin per image
    dm.trainer.training = False  # validating
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)[0], batch[0])


def test_gzipped_files_are_extracted(tmp_path):
    write_idx(tmp_path / "MNIST" / "raw", gz=True)
    dm = make(tmp_path)
    assert len(dm.splits["train"]) == NUM_TRAIN - 50
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_fashion_mnist(tmp_path):
    write_idx(tmp_path / "FashionMNIST" / "raw")
    dm = make(tmp_path, dataset="fashion_mnist", labels=True)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (32, 1, 28, 28) and y.dtype == torch.long
    assert dm.class_names[y[0]] == "T-shirt/top"


FOLDERS = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py"}
FIRST_FILE = {"mnist": "train-images-idx3-ubyte", "fashion_mnist": "train-images-idx3-ubyte", "cifar10": "data_batch_1"}


@pytest.mark.parametrize("dataset", list(FOLDERS))
def test_missing_files(tmp_path, dataset):
    dm = TorchvisionDataModule(dataset=dataset, root=str(tmp_path), download=False)
    folder = str(tmp_path / FOLDERS[dataset])
    with pytest.raises(FileNotFoundError, match="not found in .* and download is off") as error:
        dm.prepare_data()
    assert folder in str(error.value) and FIRST_FILE[dataset] in str(error.value)
    assert str(error.value).endswith(f" in {folder}.")
    with pytest.raises(FileNotFoundError, match="prepare_data downloads"):
        dm.setup("fit")


def test_failed_download(tmp_path, monkeypatch):
    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error no network>\n")

    monkeypatch.setattr("torchvision.datasets.MNIST.download", offline)
    dm = TorchvisionDataModule(root=str(tmp_path), download=True)
    with pytest.raises(FileNotFoundError) as error:
        dm.prepare_data()
    folder = tmp_path / "MNIST" / "raw"
    assert str(error.value) == (
        f"MNIST not found in {folder} and the download failed (<urlopen error no network>): put "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
        f"(or their .gz) in {folder}."
    )
