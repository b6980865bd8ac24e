"""A checkpoint written before the package moved into subpackages still loads and samples the same numbers."""

import json
from pathlib import Path

import torch

from lightning_diffusion import DiffusionModule
from lightning_diffusion.checkpoints import upgrade_hparams

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_checkpoint_of_the_flat_layout_samples_what_it_sampled():
    expected = json.loads((FIXTURES / "moons_cond_v0.1.samples.json").read_text())
    model = DiffusionModule.load_from_checkpoint(FIXTURES / "moons_cond_v0.1.ckpt")
    samples = model.sample(
        len(expected["class_labels"]),
        class_labels=expected["class_labels"],
        sampler=expected["sampler"],
        num_inference_steps=expected["num_inference_steps"],
        guidance_scale=expected["guidance_scale"],
        generator=torch.Generator().manual_seed(expected["seed"]),
    )
    torch.testing.assert_close(samples, torch.tensor(expected["samples"]), rtol=0, atol=1e-6)


def test_class_paths_of_moved_modules_are_upgraded():
    old = {
        "_class_path": "lightning_diffusion.module.DiffusionModule",
        "sample_metrics": [{"class_path": "lightning_diffusion.evaluation.ClassifierMetrics", "init_args": {}}],
    }
    new = upgrade_hparams(old)
    assert new["_class_path"] == "lightning_diffusion.DiffusionModule"
    assert new["sample_metrics"][0]["class_path"] == "lightning_diffusion.metrics.ClassifierMetrics"
