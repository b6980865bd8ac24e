"""A short fit of the 2D moons in process, as the multi-GPU tests (tests/cli/test_multi_gpu*.py) run it: an MLP
with v-prediction on Toy2D, DDPM's linear schedule (SCHEDULER), no logger, checkpoint or progress bar."""

import lightning as L
from diffusers import DDPMScheduler

from lightning_diffusion import DiffusionModule
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser

SCHEDULER = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


def tiny_fit(callbacks, max_epochs=1, log_every_n_steps=10, num_batches=40, **module_kwargs):
    L.seed_everything(0)
    data = Toy2DDataModule(num_samples=64 * num_batches, num_val_samples=128, batch_size=64)
    model = DiffusionModule(
        denoiser=MLPDenoiser(),
        scheduler=SCHEDULER,
        sample_shape=(2,),
        num_inference_steps=10,
        prediction_type="v_prediction",
        **module_kwargs,
    )
    trainer = L.Trainer(
        max_epochs=max_epochs,
        log_every_n_steps=log_every_n_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    return trainer, model


def make_module(**kwargs) -> DiffusionModule:
    """A small VP module over SCHEDULER for 2D points (MLP 32 x 1), with `kwargs` as DiffusionModule options."""
    num_classes = kwargs.pop("num_classes", None)
    return DiffusionModule(
        denoiser=MLPDenoiser(num_classes=num_classes, hidden_dim=32, num_blocks=1),
        num_classes=num_classes,
        data_mean=[1.0, -2.0],
        data_std=[2.0, 0.5],
        **{"scheduler": SCHEDULER} | kwargs,
    )
