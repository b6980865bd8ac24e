"""The commands beside training: evaluate, compare, export, inspect (`python -m lightning_diffusion <command>`)."""
