"""A residual MLP denoiser for flat data (2D toy distributions)."""

from __future__ import annotations

import math

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from lightning_diffusion.errors import at_least, check_range


class _ResidualBlock(nn.Module):
    """h + MLP(LayerNorm(h) + emb): the conditioning enters every block."""

    def __init__(self, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.emb_proj = nn.Linear(hidden_dim, hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim)
        )

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.mlp(self.norm(h) + self.emb_proj(emb))


class MLPDenoiser(nn.Module):
    """MLP denoiser with a sinusoidal time embedding (Vaswani et al. 2017, as used by Ho et al. 2020).

    Args:
        sample_shape: Shape of one sample, e.g. ``(2,)``; linked from the data by the CLI.
        num_classes: Number of classes for conditioning (``None``: unconditional); linked from the data.
            One extra embedding, index ``num_classes``, is the "null" label of classifier-free guidance.
        hidden_dim: Width of the residual blocks.
        num_blocks: Number of residual blocks.
        time_embed_dim: Size of the sinusoidal time features.
        dropout: Dropout inside the blocks.
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...] = (2,),
        num_classes: int | None = None,
        hidden_dim: int = 256,
        num_blocks: int = 4,
        time_embed_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        at_least("MLPDenoiser", 1, num_classes=num_classes, hidden_dim=hidden_dim, num_blocks=num_blocks)
        check_range("MLPDenoiser", "time_embed_dim", time_embed_dim, 2)  # a sine and a cosine at least
        check_range("MLPDenoiser", "dropout", dropout, 0, 1, high_open=True)
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        dim = math.prod(self.sample_shape)
        self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_embed_dim, hidden_dim)
        self.class_embedding = nn.Embedding(num_classes + 1, hidden_dim) if num_classes else None
        self.input = nn.Linear(dim, hidden_dim)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden_dim, dropout) for _ in range(num_blocks))
        self.output = nn.Sequential(nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, dim))

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        emb = self.time_embedding(self.time_proj(t).to(x_t.dtype))  # (B, hidden)
        if self.class_embedding is not None:
            if class_labels is None:
                class_labels = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.class_embedding(class_labels)
        h = self.input(x_t.flatten(1))
        for block in self.blocks:
            h = block(h, emb)
        return self.output(h).view_as(x_t)
