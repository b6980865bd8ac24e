"""Multi-GPU trust for the EMA: one fused update without host syncs and the warmed-up average, an average on the CPU
of a model on the GPU that reads the step's weights, its options (start, interval, device) with validation on the
training weights before the first update, and the one message that says so (issue 14)."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers.tiny_fit import SCHEDULER, tiny_fit

from lightning_diffusion import DiffusionModule
from lightning_diffusion.callbacks import EMA
from lightning_diffusion.data import Toy2DDataModule
from lightning_diffusion.denoisers import MLPDenoiser


def test_ema_is_one_fused_update_without_host_syncs_and_the_warmed_up_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(decay=0.9)
    module = L.LightningModule()
    module.net = model
    ema.setup(SimpleNamespace(), module, "fit")
    expected = [p.detach().clone() for p in module.parameters()]
    syncs = []
    original = torch.Tensor.item, torch.Tensor.__bool__
    torch.Tensor.item = lambda self: syncs.append("item") or original[0](self)
    torch.Tensor.__bool__ = lambda self: syncs.append("bool") or original[1](self)
    try:
        for n in range(6):
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(torch.randn_like(p))
            ema.on_train_batch_end(SimpleNamespace(global_step=n + 1), module, None, None, n)
            current = [p.detach() for p in module.parameters()]
            d = min(0.9, (1 + n) / (10 + n))  # the warmed-up decay of the n-th update
            expected = [c.clone() if n == 0 else d * e + (1 - d) * c for e, c in zip(expected, current, strict=False)]
    finally:
        torch.Tensor.item, torch.Tensor.__bool__ = original
    assert syncs == []
    averaged = list(ema.average.module.parameters())
    for a, e in zip(averaged, expected, strict=False):
        assert torch.allclose(a, e, atol=1e-6)
    assert ema.num_updates == 6 and int(ema.average.n_averaged) == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_ema_on_the_cpu_of_a_model_on_the_gpu_averages_the_weights_of_the_step():
    """EMA(device="cpu") of a model on the GPU reads the weights once the step has written them: a copy to the host
    that does not wait (non_blocking) would hand the average a buffer the GPU is still filling."""
    module = L.LightningModule()
    module.net = torch.nn.Linear(2048, 2048)
    module.cuda()
    ema = EMA(decay=0.9, device="cpu")
    ema.setup(SimpleNamespace(), module, "fit")
    start = [p.detach().double().cpu() for p in module.parameters()]
    busy = torch.randn(4096, 4096, device="cuda")
    for n in range(3):
        for _ in range(20):  # keep the GPU busy, so that the step's writes land late
            busy = busy @ busy / 4096
        with torch.no_grad():
            for p in module.parameters():
                p.add_(1.0)
        ema.on_train_batch_end(SimpleNamespace(global_step=n + 1), module, None, None, n)
    a = [s + 1 for s in start]  # the first update copies, then d = 2/11 and 3/12
    a = [2 / 11 * x + 9 / 11 * (s + 2) for x, s in zip(a, start, strict=True)]
    a = [3 / 12 * x + 9 / 12 * (s + 3) for x, s in zip(a, start, strict=True)]
    for averaged, expected in zip(ema.average.module.parameters(), a, strict=True):
        assert averaged.device.type == "cpu"
        assert torch.allclose(averaged.double(), expected, atol=1e-5)


def test_ema_options_and_validation_before_the_first_update():
    """Until update_starting_at_step, validation and checkpoints use the training weights (not the raw initial
    weights as if they were the average); updates then come every update_every_n_steps; the average can live on
    the CPU."""
    _, plain = tiny_fit([], max_epochs=2, num_batches=8)
    late = EMA(decay=0.9, update_starting_at_step=1000, device="cpu")
    trainer, model = tiny_fit([late], max_epochs=2, num_batches=8)
    assert torch.equal(trainer.callback_metrics["val/loss"], plain.trainer.callback_metrics["val/loss"])
    assert late.num_updates == 0
    for a, b in zip(
        model.parameters(), plain.parameters(), strict=False
    ):  # the trained weights were not replaced at the end
        assert torch.equal(a, b)
    every = EMA(decay=0.9, update_every_n_steps=3, update_starting_at_step=4, device="cpu")
    tiny_fit([every], max_epochs=2, num_batches=8)
    assert every.num_updates == len([s for s in range(16) if s >= 4 and s % 3 == 0])
    assert next(every.average.parameters()).device.type == "cpu"


def test_ema_says_once_that_validation_uses_the_training_weights_and_not_at_the_sanity_check(caplog):
    """Said at the first real validation before the first update, once; the sanity check (no metrics, before any
    step, so before any update) says nothing."""
    import logging

    import lightning_utilities.core.rank_zero as rank_zero

    rank_zero.log.addHandler(caplog.handler)  # rank_zero_info's logger does not propagate to the root
    caplog.set_level(logging.INFO)
    try:
        for ema, said in [(EMA(decay=0.9), 0), (EMA(decay=0.9, update_starting_at_step=1000), 1)]:
            caplog.clear()
            L.seed_everything(0)
            data = Toy2DDataModule(num_samples=64 * 4, num_val_samples=128, batch_size=64)
            model = DiffusionModule(
                denoiser=MLPDenoiser(),
                scheduler=SCHEDULER,
                sample_shape=(2,),
                num_inference_steps=2,
                val_num_samples=16,
            )
            trainer = L.Trainer(
                max_epochs=2,
                callbacks=[ema],
                logger=False,
                enable_progress_bar=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                num_sanity_val_steps=1,
            )
            trainer.fit(model, data)
            # the same record may reach caplog's handler twice (directly and through the root): count records once
            told = {id(r) for r in caplog.records if "EMA: no update yet" in r.getMessage()}
            assert len(told) == said, caplog.text
    finally:
        rank_zero.log.removeHandler(caplog.handler)
