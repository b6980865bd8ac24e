"""Whether a run's data gives a batch: one sentence before the run rather than Lightning's warning and a run that
does nothing."""

from __future__ import annotations

import lightning as L

# per stage: the DataModule's loader, the Trainer's limit of its batches, the sentence when the loader is empty
STAGES = {
    "fit": (
        "train_dataloader",
        "limit_train_batches",
        "The training data gives no batch: {samples} samples and batch_size {batch_size}, with incomplete batches "
        "dropped: lower data.init_args.batch_size or use more training samples.",
    ),
    "validate": (
        "val_dataloader",
        "limit_val_batches",
        "The validate data gives no batch: {samples} samples and batch_size {batch_size}: hold out validation "
        "samples (the data's num_val_samples).",
    ),
    "test": (
        "test_dataloader",
        "limit_test_batches",
        "The test data gives no batch: {samples} samples and batch_size {batch_size}: give the data test samples.",
    ),
    "predict": (
        "predict_dataloader",
        "limit_predict_batches",
        "The predict data gives no batch: {samples} samples and batch_size {batch_size}: set "
        "data.init_args.predict_num_samples to at least 1.",
    ),
}


def refuse_empty_data(trainer: L.Trainer, stage: str) -> None:
    """One sentence for a run whose data gives no batch (e.g. fewer training samples than a batch, which is dropped)."""
    data, stage = trainer.datamodule, str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
    if data is None or stage not in STAGES or getattr(trainer, STAGES[stage][1]) == 0:
        return
    loader_name, _, sentence = STAGES[stage]
    loader = getattr(data, loader_name)()
    try:
        if len(loader) > 0:
            return
        samples = len(loader.dataset)
    except TypeError:  # an iterable without a length, or several loaders: nothing to say before it runs
        return
    raise ValueError(sentence.format(samples=samples, batch_size=getattr(data, "batch_size", None)))
