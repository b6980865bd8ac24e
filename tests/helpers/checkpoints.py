"""A checkpoint file read whole: the weights, EMA, optimizer, LR-scheduler and loop states, on the CPU."""

import torch


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)
