"""Export a trained image checkpoint to diffusers.

    python -m lightning_diffusion export outputs/mnist/version_0/checkpoints/last.ckpt exports/mnist

An unconditional VP (DDPM) model becomes a `DDPMPipeline` folder (`DDPMPipeline.from_pretrained(folder)` samples
it); a conditional one, and any EDM or flow-matching model, saves its `unet/` and the matching `scheduler/`
(DDPMScheduler, EDMEulerScheduler with the trained sigma_data, FlowMatchEulerDiscreteScheduler) with
`save_pretrained` (diffusers has no class-conditional pipeline for UNet2DModel, and DDPMPipeline steps only DDPM
schedulers), plus `lightning_diffusion.json` with the formulation, the classes and the guidance null label.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import DDPMPipeline
from jsonargparse import ArgumentParser

from lightning_diffusion.checkpoints import check_checkpoint
from lightning_diffusion.errors import PROGRAM, one_line_errors, parse_arguments
from lightning_diffusion.formulations import VP
from lightning_diffusion.model.module import DiffusionModule
from lightning_diffusion.runs import write_atomically, write_folder_atomically

COMMAND = f"{PROGRAM} export"


def export(checkpoint: str | Path, folder: str | Path) -> Path:
    """Writes the checkpoint's UNet and schedule (EMA weights, as saved) to a new diffusers folder.

    The folder is written beside its place first and moved there when complete, so a failed export leaves nothing.

    Args:
        checkpoint: A DiffusionModule checkpoint with a UNetDenoiser.
        folder: The diffusers folder to write; it must not exist yet (or be empty).
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} already exists and is not empty: export to a new folder.")
    hparams = check_checkpoint(checkpoint, "DiffusionModule", needed_by="export needs")
    denoiser = hparams.get("denoiser")
    class_path = denoiser.get("class_path", "") if isinstance(denoiser, dict) else ""
    if class_path and not class_path.endswith("UNetDenoiser"):
        raise ValueError(
            f"{checkpoint} has the denoiser {class_path.rsplit('.', 1)[-1]}: only image UNets (UNetDenoiser) export "
            "to diffusers."
        )
    model = DiffusionModule.load_from_checkpoint(checkpoint, map_location="cpu")
    unet = getattr(model.denoiser, "unet", None)
    if unet is None:
        raise ValueError(
            f"The denoiser {type(model.denoiser).__name__} is not a UNetDenoiser: only image UNets export to diffusers."
        )
    scheduler = model.formulation.diffusers_scheduler()
    vp = isinstance(model.formulation, VP)

    def write(partial: Path) -> None:
        if model.num_classes is None and vp:
            DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(partial)
        else:
            unet.save_pretrained(partial / "unet")
            scheduler.save_pretrained(partial / "scheduler")
        info = {
            "num_classes": model.num_classes,
            "null_label": model.num_classes,
            "class_names": model.class_names,
            "formulation": type(model.formulation).__name__,
            "prediction_type": model.formulation.prediction_type if vp else None,
            "guidance_scale": model.hparams.guidance_scale,
            "data_mean": model.data_mean.flatten().tolist(),
            "data_std": model.data_std.flatten().tolist(),
        }
        write_atomically(partial / "lightning_diffusion.json", json.dumps(info, indent=2))

    write_folder_atomically(folder, write)
    return folder


def main(argv: list[str]) -> Path:
    """`python -m lightning_diffusion export CHECKPOINT FOLDER`; an expected error ends as one line `error: ...`."""
    with one_line_errors(argv, COMMAND):
        parser = ArgumentParser(prog=COMMAND, description=__doc__.strip().splitlines()[0], exit_on_error=False)
        parser.add_function_arguments(export, as_positional=True)
        required = f"export needs a checkpoint and a new folder: {COMMAND} <run>/checkpoints/last.ckpt exports/<name>."
        args = parse_arguments(parser, argv, COMMAND, required=required)
        folder = export(args.checkpoint, args.folder)
        print(f"Exported to {folder}")
        return folder
