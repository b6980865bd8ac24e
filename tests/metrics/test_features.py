"""Image sample metrics: the distances against closed forms, FID/KID from a local weights file, and the offline
classifier metrics end to end through the CLI (the classifier trained by the framework on generated MNIST)."""

import json
import math

import pytest
import torch
import yaml
from conftest import REPO, cpu_overrides

from lightning_diffusion.metrics.features import ClassifierMetrics, InceptionMetrics, frechet_distance, kernel_distance


def test_frechet_distance_identical_sets_is_zero():
    torch.manual_seed(0)
    x = torch.randn(500, 8, dtype=torch.float64)
    assert abs(frechet_distance(x, x).item()) < 1e-4


def test_frechet_distance_of_gaussians_closed_form():
    """N(0, I) vs N(mu, s^2 I) in d dims: |mu|^2 + tr(I + s^2 I - 2 s I) = |mu|^2 + d (1 - s)^2."""
    torch.manual_seed(1)
    n, d, s = 50_000, 4, 2.0
    mu = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    x = torch.randn(n, d, dtype=torch.float64)
    y = s * torch.randn(n, d, dtype=torch.float64) + mu
    expected = mu.pow(2).sum().item() + d * (1 - s) ** 2
    assert abs(frechet_distance(x, y).item() - expected) < 0.05 * expected


def test_kernel_distance_zero_for_equal_and_positive_for_shifted():
    torch.manual_seed(2)
    x, y = torch.randn(400, 8, dtype=torch.float64), torch.randn(400, 8, dtype=torch.float64)
    same = kernel_distance(x, y).item()
    shifted = kernel_distance(x, y + 1.0).item()
    # cubic kernel (x.y/d + 1)^3: a mean shift of 1 per dim gives MMD^2 of about 3 + ... > 1
    assert abs(same) < 0.05 and shifted > 1.0, (same, shifted)


def test_kernel_distance_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    kernel_distance(torch.randn(50, 4), torch.randn(50, 4))
    torch.manual_seed(3)  # the draw below must not depend on kernel_distance having run
    assert torch.equal(torch.rand(1), expected)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file of the TF-FID Inception's architecture with random weights (the real one needs internet)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    patch = pytest.MonkeyPatch()
    patch.setattr(fe, "load_state_dict_from_url", lambda *args, **kwargs: {})
    patch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None)
    torch.manual_seed(0)
    net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    patch.undo()
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(torch.nn.Module.state_dict(net), path)
    return path


def test_inception_metrics_from_a_local_weights_file(random_inception_weights):
    torch.manual_seed(4)
    real = torch.rand(8, 1, 28, 28)  # grayscale: repeated to RGB; 8 images, each about 0.2 s of Inception on one thread
    floor = torch.rand(8, 1, 28, 28)
    metric = InceptionMetrics(weights_path=str(random_inception_weights), batch_size=5, kid_subset_size=4)
    same = metric.evaluate(real, real, floor)
    assert set(same) == {"fid", "fid_floor", "kid", "kid_floor"}
    different = metric.evaluate(torch.zeros_like(real) + 0.5, real, floor)
    assert abs(same["fid"].item()) < 1e-3 * different["fid"].item()
    assert different["fid"].item() > same["fid_floor"].item() > 0


def test_inception_weights_missing_offline_is_one_sentence(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    path = tmp_path / "weights" / "inception.pth"
    with pytest.raises(
        ValueError, match=r"fetch https://github.com/toshas/torch-fidelity/.* put the file at .*inception\.pth"
    ):
        InceptionMetrics(weights_path=str(path)).prepare()
    assert not list(path.parent.iterdir())  # no partial file left behind


# ------------------------------------------------------------------ the classifier, trained through the CLI

CLASSIFIER = REPO / "configs/mnist_classifier.yaml"
MNIST_COND = REPO / "configs/mnist_cond.yaml"


@pytest.fixture(scope="module")
def classifier_run(fake_mnist_root, tmp_path_factory):
    """configs/mnist_classifier.yaml through the real CLI on generated digits: 2 epochs of a narrow CNN."""
    from lightning_diffusion.cli import main

    out = tmp_path_factory.mktemp("classifier_outputs")
    cli = main(
        [
            "fit",
            "--config",
            str(CLASSIFIER),
            *cpu_overrides(CLASSIFIER, fake_mnist_root),
            "--trainer.max_epochs",
            "3",
            "--data.init_args.batch_size",
            "32",
            "--output_dir",
            str(out),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    return cli, out / "mnist_classifier"


def test_classifier_trains_through_the_cli(classifier_run):
    cli, experiment = classifier_run
    metrics = cli.trainer.callback_metrics
    # the generated digits are separable by where their square is: 10 classes, chance is 0.1
    assert metrics["val/accuracy"].item() > 0.9, metrics
    assert (experiment / "version_0/checkpoints/last.ckpt").exists()
    config = yaml.safe_load((experiment / "version_0/config.yaml").read_text())
    assert config["model"]["class_path"] == "lightning_diffusion.ImageClassifier"
    assert cli.model.hparams.num_classes == 10 and tuple(cli.model.hparams.sample_shape) == (1, 32, 32)  # linked


def test_classifier_metrics_on_real_images(classifier_run):
    cli, experiment = classifier_run
    cli.datamodule.setup("test")
    batches = list(cli.datamodule.test_dataloader())
    x, y = torch.cat([b[0] for b in batches])[:60], torch.cat([b[1] for b in batches])[:60]
    images = x * 0.5 + 0.5  # data space [0, 1]
    metric = ClassifierMetrics(checkpoint=str(experiment))  # the experiment folder: its newest last.ckpt
    metric.setup(torch.device("cpu"))
    right = metric.evaluate(images[:30], images[30:], images[:30], y[:30], y[:30])
    assert right["classifier_accuracy"].item() > 0.9 and right["classifier_accuracy_real"].item() > 0.9
    assert abs(right["classifier_fd"].item() - right["classifier_fd_floor"].item()) < 1e-6  # same sets
    wrong = metric.evaluate(images[:30], images[30:], images[:30], (y[:30] + 1) % 10, y[:30])
    assert wrong["classifier_accuracy"].item() < 0.1
    noise = metric.evaluate(torch.rand_like(images[:30]), images[30:], images[:30])
    assert noise["classifier_fd"].item() > 10 * right["classifier_fd"].item()


def test_classifier_checkpoint_forms(classifier_run, tmp_path):
    _, experiment = classifier_run
    last = experiment / "version_0/checkpoints/last.ckpt"
    for given in (last, experiment / "version_0", experiment):  # a file, a run folder, an experiment folder
        assert ClassifierMetrics(checkpoint=str(given))._checkpoint_file().resolve() == last.resolve(), given
    for missing in (tmp_path / "nothing.ckpt", tmp_path):
        with pytest.raises(ValueError, match="^No classifier checkpoint at .* run folder or experiment folder"):
            ClassifierMetrics(checkpoint=str(missing))._checkpoint_file()


def test_classifier_of_other_data_is_one_sentence(classifier_run, fake_mnist_root, tmp_path, run_cli, capsys):
    """The judge trained on 32x32 digits of 10 classes refuses samples of another shape or class count: as
    ClassifierMetrics.check, and through the CLI before any training."""
    _, experiment = classifier_run
    metric = ClassifierMetrics(checkpoint=str(experiment))
    metric.setup(torch.device("cpu"))
    metric.check((1, 32, 32), 10)
    metric.check((1, 32, 32), None)  # an unconditional model of the same images: no class to compare
    with pytest.raises(
        ValueError,
        match=r"trained on samples of shape \(1, 32, 32\) with 10 classes, but the model "
        r"makes \(1, 28, 28\) with 10: train a classifier on the same data",
    ):
        metric.check((1, 28, 28), 10)
    with pytest.raises(ValueError, match=r"with 10 classes, but the model makes \(1, 32, 32\) with 2"):
        metric.check((1, 32, 32), 2)
    fragment = yaml.safe_load((REPO / "configs/metrics/mnist_classifier.yaml").read_text())
    fragment["model"]["sample_metrics"][0]["init_args"]["checkpoint"] = str(experiment)
    metrics_config = tmp_path / "metrics.yaml"
    metrics_config.write_text(yaml.safe_dump(fragment))
    with pytest.raises(SystemExit) as exit_info:  # unpadded 28x28 digits
        run_cli(
            "fit",
            "--config",
            str(MNIST_COND),
            "--config",
            str(metrics_config),
            *cpu_overrides(MNIST_COND, fake_mnist_root),
            "--data.init_args.pad_to_32",
            "false",
            "--model.val_num_samples",
            "8",
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "but the model makes (1, 28, 28) with 10" in err and "Traceback" not in err
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_diffusion_test_writes_classifier_metrics(classifier_run, fake_mnist_root, tmp_path, run_cli):
    """mnist_cond + the metrics fragment: fit one epoch, then `test --ckpt_path last` writes the JSON."""
    _, experiment = classifier_run
    fragment = yaml.safe_load((REPO / "configs/metrics/mnist_classifier.yaml").read_text())
    fragment["model"]["val_num_samples"] = 8
    fragment["model"]["sample_batch_size"] = 5  # 8 samples in batches of 5 and 3
    fragment["model"]["sample_metrics"][0]["init_args"]["checkpoint"] = str(experiment)
    metrics_config = tmp_path / "metrics.yaml"
    metrics_config.write_text(yaml.safe_dump(fragment))
    common = [
        "--config",
        str(MNIST_COND),
        "--config",
        str(metrics_config),
        *cpu_overrides(MNIST_COND, fake_mnist_root),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
    ]
    fit = run_cli("fit", *common)
    assert "val/classifier_fd" in fit.trainer.callback_metrics
    run_cli("test", *common, "--ckpt_path", "last", "--model.guidance_scale", "1.5", "--model.sampler", "DDIMScheduler")
    (path,) = (tmp_path / "outputs/mnist_cond").glob("version_1/metrics_test.json")
    record = json.loads(path.read_text())
    assert record["sampler"] == "DDIMScheduler" and record["guidance_scale"] == 1.5 and record["num_samples"] == 8
    for name in ("fd", "fd_floor", "kid", "accuracy", "accuracy_real"):
        assert math.isfinite(record["metrics"][f"test/classifier_{name}"]), name
    assert record["metrics"]["test/classifier_accuracy_real"] > 0.9  # the judge knows the real digits
    assert (
        record["metrics"]["test/classifier_fd_floor"] < record["metrics"]["test/classifier_fd"]
    )  # 2 steps of training

    # the image sampler benchmark's small mode, on this checkpoint and classifier
    import samplers_images

    ckpt = tmp_path / "outputs/mnist_cond/version_0/checkpoints/last.ckpt"
    report = samplers_images.main(
        [
            "--ckpt",
            str(ckpt),
            "--classifier",
            str(experiment),
            "--num_samples",
            "10",
            "--samplers",
            "DDIMScheduler:2",
            "UniPCMultistepScheduler:3",
            "--notes",
            "",
        ]
    )
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and rows[2].startswith("| real vs real (floor) | - |")  # header, rule, floor, 2 samplers
    assert rows[4].startswith("| UniPCMultistepScheduler | 3 | ")
    assert (
        "FD / DDIMScheduler 2's" in rows[0] and rows[3].split(" | ")[3] == "1.00"
    )  # the first sampler is the yardstick


def test_missing_classifier_fails_before_training(fake_mnist_root, tmp_path, run_cli, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fragment's relative outputs/mnist_classifier: none here
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            str(MNIST_COND),
            "--config",
            str(REPO / "configs/metrics/mnist_classifier.yaml"),
            *cpu_overrides(MNIST_COND, fake_mnist_root),
            "--model.val_num_samples",
            "8",
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No classifier checkpoint at outputs/mnist_classifier: train one first" in err
    assert not (tmp_path / "outputs/mnist_cond").exists() or not list((tmp_path / "outputs/mnist_cond").rglob("*.ckpt"))
