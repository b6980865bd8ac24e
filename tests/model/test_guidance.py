"""Classifier-free guidance end to end: a conditional MLP trained on the two moons (with label dropout) puts the
samples asked for moon k on moon k, more often with guidance 3 than 1; label-blind and untrained models do not.

Each sample is classified by its nearest neighbour among labelled held-out moons points.
"""

import math
import warnings

import pytest
import torch
from diffusers import DDPMScheduler

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser

TRAIN_STEPS = 1000  # about 10 s on one CPU thread; with the cosine decay the accuracies below hold for every seed tried
N = 4000  # samples per guidance scale, half asked for each moon
SAMPLER = dict(sampler="DPMSolverMultistepScheduler", num_inference_steps=20)
FLOOR = 0.95  # "far above chance (0.5)": trained models reach 0.99 at guidance 1


def moons(batch_size: int) -> Toy2DDataModule:
    return Toy2DDataModule(
        dataset="moons",
        labels=True,
        noise=0.1,
        num_samples=20_000,
        num_val_samples=4_000,
        batch_size=batch_size,
        seed=0,
    )


def make_model(data: Toy2DDataModule) -> DiffusionModule:
    return DiffusionModule(
        denoiser=MLPDenoiser(sample_shape=(2,), num_classes=2, hidden_dim=128, num_blocks=2),
        scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False),
        num_classes=2,
        label_dropout=0.2,
        sample_shape=(2,),
        data_mean=data.data_mean,
        data_std=data.data_std,
    )


@pytest.fixture(scope="module")
def outcomes():
    """Per sample: whether it landed on the moon asked for (trained at guidance 0, 1 and 3; untrained at 1), and the
    distance to its nearest held-out point; plus the same distance for fresh real points."""
    data = moons(batch_size=512)
    held_out, held_out_labels = (
        torch.cat(parts) for parts in zip(*moons(batch_size=4_000).val_dataloader(), strict=False)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this tiny MLP trains 10x faster on one thread of a busy 2-core machine
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step outside a Trainer
            torch.manual_seed(0)
            untrained, model = make_model(data), make_model(data)
            model.load_state_dict(untrained.state_dict())
            optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, TRAIN_STEPS)
            step = 0
            while step < TRAIN_STEPS:
                for batch in data.train_dataloader():  # the module's own step: loss and label dropout
                    loss = model.training_step(batch, step)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    step += 1
                    if step == TRAIN_STEPS:
                        break

        labels = torch.arange(N) % 2

        def land(m: DiffusionModule, guidance: float) -> tuple[torch.Tensor, torch.Tensor]:
            x = m.sample(
                N,
                class_labels=labels,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(1),
                data_space=False,
                **SAMPLER,
            )
            distance, nearest = torch.cdist(x, held_out).min(1)
            return held_out_labels[nearest] == labels, distance

        results = {f"guidance {g}": land(model, g) for g in (0.0, 1.0, 3.0)}
        results["untrained"] = land(untrained, 1.0)
        real = torch.cat([x for x, _ in moons(batch_size=N).train_dataloader()])[:N]
        results["real"] = (None, torch.cdist(real, held_out).min(1).values)
        return results
    finally:
        torch.set_num_threads(threads)


def accuracy(outcome) -> float:
    return outcome[0].float().mean().item()


def test_conditional_samples_land_on_their_moon(outcomes):
    """At guidance 1 the samples asked for moon k are nearest to moon k's points far above chance, and they lie on
    the data: their median distance to the held-out points is at most 1.5x that of real points."""
    assert accuracy(outcomes["guidance 1.0"]) > FLOOR
    assert outcomes["guidance 1.0"][1].median() < 1.5 * outcomes["real"][1].median()


def test_guidance_3_is_more_accurate_than_1(outcomes):
    """From the same noise, more samples turn right than wrong going from guidance 1 to 3, by more than 3 standard
    errors of a paired (McNemar) comparison, while the samples stay on the data."""
    right_1, right_3 = outcomes["guidance 1.0"][0], outcomes["guidance 3.0"][0]
    gained, lost = (right_3 & ~right_1).sum().item(), (~right_3 & right_1).sum().item()
    assert gained - lost > 3 * math.sqrt(gained + lost), (gained, lost)
    assert accuracy(outcomes["guidance 3.0"]) > accuracy(outcomes["guidance 1.0"]) > FLOOR
    assert outcomes["guidance 3.0"][1].median() < 1.5 * outcomes["real"][1].median()


def test_label_blind_and_untrained_models_fail_the_floor(outcomes):
    """The controls: at guidance 0 the trained model ignores the label, so a sample matches the moon asked for with
    probability 1/2 whatever its quality (within 4 standard errors); an untrained model is far below the floor."""
    assert abs(accuracy(outcomes["guidance 0.0"]) - 0.5) < 4 * math.sqrt(0.25 / N)
    assert accuracy(outcomes["untrained"]) < FLOOR - 0.2
