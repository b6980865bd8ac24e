"""The commands beside training (`python -m lightning_diffusion <command>`): evaluate, compare, export, inspect,
posthoc-ema."""
