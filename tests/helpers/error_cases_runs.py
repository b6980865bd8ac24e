"""The mistakes of issue 15 as data, continued (error_cases.py has Case and the first ones): the data files, what
goes wrong during a run, the other entry points (inspect, export), the stop signals a run sends itself at a batch
(tested in tests/cli/test_signals*.py), and the traceback behind LIGHTNING_DIFFUSION_DEBUG."""

from __future__ import annotations

from helpers.error_cases import CIFAR, CKPT, FIT, MOONS, OFFLINE, PREDICT_4_BATCHES, Case, celeb, images, mnist

# data files
DATA_FILES = [
    Case("MNIST files missing, download off", mnist("data/empty"), 2, ("MNIST not found in data/empty/MNIST/raw",)),
    Case(
        "an IDX file with a wrong magic number",
        mnist("data/magic"),
        2,
        ("train-images-idx3-ubyte is not an IDX file of images", "magic number is 0x00000000, expected 0x00000803"),
    ),
    Case(
        "a truncated IDX file",
        mnist("data/truncated"),
        2,
        ("train-images-idx3-ubyte is truncated", "300 images of 28x28"),
    ),
    Case("fewer labels than images", mnist("data/count"), 2, ("t10k-labels-idx1-ubyte holds 99 labels", "100 images")),
    Case("labels outside the classes", mnist("data/range"), 2, ("labels from 12 to 12, expected 0 to 9",)),
    Case("a corrupt .gz", mnist("data/badgz"), 2, ("train-images-idx3-ubyte.gz is not a readable gzip file",)),
    Case(
        "CIFAR-10 files that fail their checksums",
        images(CIFAR, "--data.init_args.root", "data/cifar"),
        2,
        ("do not match the published checksums", "data/cifar/cifar-10-batches-py"),
    ),
    Case("CelebFaces without an image column", celeb("data/celeb_columns"), 2, ("has no image column",), env=OFFLINE),
    Case("CelebFaces without a decodable image", celeb("data/celeb_broken"), 2, ("could be decoded",), env=OFFLINE),
    Case(
        "CelebFaces from the Hub, offline",
        celeb("nobody/nothing-here"),
        2,
        ("could not load 'nobody/nothing-here' from the Hugging Face Hub",),
        env=OFFLINE,
    ),
]

# during the run
DURING_THE_RUN = [
    Case(
        "a non-finite loss",
        [
            *FIT,
            "--model.optimizer.init_args.lr",
            "1e30",
            "--trainer.max_steps",
            "20",
            "--trainer.enable_progress_bar",
            "false",
        ],
        1,
        ("non-finite loss",),
        writes=None,
    ),
    Case(
        "val_num_samples above half the held-out data",
        [*FIT, "--model.val_num_samples", "25000"],
        2,
        ("val_num_samples",),
    ),
]

# the other entry points
OTHER_ENTRY_POINTS = [
    Case(
        "inspect --timesteps beyond the schedule",
        ["inspect", "--config", MOONS, "--output_dir", "out", "--timesteps", "[0, 1000]"],
        2,
        ("--timesteps 1000 lie outside the schedule's 0 to 999",),
    ),
    Case(
        "export of an ImageClassifier",
        ["export", "classifier.ckpt", "exports/a"],
        2,
        ("export needs a DiffusionModule",),
    ),
    Case("export of a 2D model", ["export", CKPT, "exports/b"], 2, ("only image UNets",)),
    Case(
        "export into a folder that is not empty",
        ["export", CKPT, "exports/full"],
        2,
        ("exports/full already exists",),
    ),
    Case(
        "export of a truncated checkpoint",
        ["export", "truncated.ckpt", "exports/c"],
        2,
        ("not a readable checkpoint",),
    ),
]

# stop signals, which the run sends itself at a batch (tested in test_signals.py and test_signals_ctrl_c.py)
STOP_SIGNALS = [
    Case(
        "SIGTERM during fit",
        [*FIT, "--trainer.enable_progress_bar", "false"],
        143,
        ("SIGTERM: saved",),
        writes=None,
        line="SIGTERM: saved",
        table_only=True,
        signal=("SIGTERM", "train", 2),
    ),
    Case(
        "Ctrl-C (SIGINT) during fit",
        [*FIT, "--trainer.enable_progress_bar", "false"],
        130,
        ("SIGINT: saved",),
        writes=None,
        line="SIGINT: saved",
        table_only=True,
        signal=("SIGINT", "train", 2),
    ),
    Case(
        "a second Ctrl-C while the first waits for the end of a slow batch",
        [*FIT, "--trainer.enable_progress_bar", "false"],
        130,
        ("aborted by a second Ctrl-C",),
        writes=None,
        table_only=True,
        signal=("SIGINT", "train", 2, 0.2),
    ),
    Case(
        "SIGTERM during predict",
        PREDICT_4_BATCHES,
        143,
        ("predict stopped",),
        line="SIGTERM: predict stopped",
        table_only=True,
        signal=("SIGTERM", "predict", 1),
    ),
    Case(
        "Ctrl-C during predict",
        PREDICT_4_BATCHES,
        130,
        ("predict stopped",),
        line="SIGINT: predict stopped",
        table_only=True,
        signal=("SIGINT", "predict", 1),
    ),
]

# the traceback, when asked for
TRACEBACK = [
    Case(
        "fit without --config, LIGHTNING_DIFFUSION_DEBUG=1",
        ["fit"],
        1,
        ("ArgumentError",),
        line="argparse.ArgumentError",
        env={"LIGHTNING_DIFFUSION_DEBUG": "1"},
        table_only=True,
    ),
]
