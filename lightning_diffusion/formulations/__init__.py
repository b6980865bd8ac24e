"""Formulations of diffusion: how training noises data and what the network learns, and how sampling inverts it.
One YAML key, `model.formulation`, chooses one; the denoisers, EMA, guidance, metrics and plots serve all three."""

from lightning_diffusion.formulations.base import Formulation
from lightning_diffusion.formulations.edm import EDM
from lightning_diffusion.formulations.flow import FlowMatching
from lightning_diffusion.formulations.vp import VP

__all__ = ["Formulation", "VP", "EDM", "FlowMatching"]
