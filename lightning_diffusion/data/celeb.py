"""Celebrity faces (TMDB profile photos, ``ashraq/tmdb-celeb-10k``), square, conditioned on gender: the Hub image
module with that dataset's columns and gender codes."""

from __future__ import annotations

from lightning_diffusion.data.hub import HubImageDataModule

GENDERS = {1: 0, 2: 1}  # the dataset's gender codes (0 unknown, 1 female, 2 male, 3 non-binary) -> class labels


class CelebFacesDataModule(HubImageDataModule):
    """Celebrity faces (female / male), center-cropped to squares and scaled to [-1, 1] (data space [0, 1]).

    ``HubImageDataModule`` with the ``image`` column, the ``gender`` column as labels and the map {1: 0, 2: 1}:
    rows of gender 1 (female, label 0) and 2 (male, label 1) are kept, the others dropped; images that fail to
    decode are skipped and counted. ``datasets`` caches the download and the decoded faces under ``root/raw/hf``,
    reused by later runs with the same options, offline too.

    Args:
        dataset: A Hugging Face Hub dataset id, or a local folder of parquet files or of ``datasets.save_to_disk``;
            it needs an ``image`` column and an integer ``gender`` column.
        root: Folder of the downloads and of ``datasets``' caches (``root/raw/hf``).
        image_size: Side of the square images.
        labels: Yield gender labels for a conditional model (2 classes: female, male); false: every face,
            unconditional.
        num_proc: Processes that decode (None: one).
        random_flip: Flip training images horizontally at random.
        num_val_samples: Size of the validation split (it also serves ``test``).
        seed: Seed of the permutation that picks the validation split; the same seed gives the same split.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: Pin batches in page-locked memory for faster copies to the GPU.
        persistent_workers: Keep the worker processes alive between epochs (only with num_workers > 0).
        predict_num_samples: How many samples ``predict`` generates.
        predict_class_labels: Class labels for ``predict`` (see the base class).
    """

    def __init__(
        self,
        dataset: str = "ashraq/tmdb-celeb-10k",
        root: str = "data",
        image_size: int = 64,
        labels: bool = True,
        num_proc: int | None = None,
        random_flip: bool = True,
        num_val_samples: int = 500,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        predict_num_samples: int = 64,
        predict_class_labels: list[int] | None = None,
    ) -> None:
        super().__init__(
            dataset,
            class_names=["female", "male"] if labels else None,
            image_column="image",
            label_column="gender" if labels else None,
            label_map=GENDERS if labels else None,
            root=root,
            image_size=image_size,
            channels=3,
            num_proc=num_proc,
            random_flip=random_flip,
            num_val_samples=num_val_samples,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            predict_num_samples=predict_num_samples,
            predict_class_labels=predict_class_labels,
        )
        self.labels = labels
