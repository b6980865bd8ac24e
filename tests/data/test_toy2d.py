import pytest
import torch

from lightning_diffusion.data import Toy2DDataModule

DATASETS = ["moons", "circles", "swissroll", "8gaussians", "checkerboard"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_standardized_with_training_statistics(dataset):
    dm = Toy2DDataModule(dataset=dataset, num_samples=4000, num_val_samples=1000, batch_size=500)
    train = torch.cat([b[0] for b in dm.train_dataloader()])
    assert train.shape == (4000, 2)  # drop_last with 500 | 4000
    assert torch.allclose(train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(2), atol=1e-4)
    val = torch.cat([b[0] for b in dm.val_dataloader()])
    assert val.shape == (1000, 2) and val.abs().max() < 6
    # the stats map model space back to data space
    mean, std = torch.tensor(dm.data_mean), torch.tensor(dm.data_std)
    assert torch.isfinite(mean).all() and (std > 0).all() and dm.sample_shape == (2,) and dm.num_classes is None


def test_deterministic_under_seed():
    a, b = (Toy2DDataModule(seed=3, num_samples=1000)._splits["train"][0] for _ in range(2))
    c = Toy2DDataModule(seed=4, num_samples=1000)._splits["train"][0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_validation_split_is_an_independent_draw():
    dm = Toy2DDataModule(num_samples=1000, num_val_samples=1000)
    assert not torch.equal(dm._splits["train"][0], dm._splits["val"][0])


@pytest.mark.parametrize("dataset,classes", [("moons", 2), ("circles", 2), ("8gaussians", 8), ("checkerboard", 2)])
def test_labels(dataset, classes):
    dm = Toy2DDataModule(dataset=dataset, labels=True, num_samples=2000, batch_size=100)
    x, y = next(iter(dm.train_dataloader()))
    assert dm.num_classes == classes and y.dtype == torch.long and x.shape == (100, 2)
    assert set(dm._splits["train"][1].tolist()) == set(range(classes))


def test_moons_labels_separate_the_moons():
    dm = Toy2DDataModule(dataset="moons", labels=True, noise=0.0, num_samples=2000)
    x, y = dm._splits["train"]
    points = x * torch.tensor(dm.data_std) + torch.tensor(dm.data_mean)
    # sklearn: moon 0 is the upper arc centred at (0, 0), moon 1 the lower arc centred at (1, 0.5)
    assert points[y == 0, 1].min() >= -1e-6 and points[y == 1, 1].max() <= 0.5 + 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="Unknown 2D dataset 'spiral'"):
        Toy2DDataModule(dataset="spiral")
    with pytest.raises(ValueError, match="swissroll dataset has no labels"):
        Toy2DDataModule(dataset="swissroll", labels=True)


def test_predict_requests_cycle_the_classes():
    dm = Toy2DDataModule(labels=True, predict_num_samples=5, batch_size=8)
    labels, indices = next(iter(dm.predict_dataloader()))
    assert labels.tolist() == [0, 1, 0, 1, 0] and indices.tolist() == [0, 1, 2, 3, 4]
    dm = Toy2DDataModule(predict_num_samples=3)
    assert next(iter(dm.predict_dataloader()))[0].tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="predict_class_labels"):
        Toy2DDataModule(labels=True, predict_class_labels=[2]).predict_dataloader()
