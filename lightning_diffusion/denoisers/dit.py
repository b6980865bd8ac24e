"""A diffusion transformer denoiser for images: DiT with adaLN-Zero blocks (Peebles & Xie 2023)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_diffusion.errors import check_range


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """The sin-cos features of Vaswani et al. 2017 (sec. 3.5): ``(N,)`` positions -> ``(N, dim)``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, rows: int, cols: int) -> Tensor:
    """The fixed 2D sin-cos position embedding of DiT (sec. 3.2, "Patchify"), half the features per axis:
    ``(rows * cols, dim)`` in the row-major order of the patches."""
    grid_r, grid_c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, grid_r.flatten()), sincos_1d(dim // 2, grid_c.flatten())], dim=1).float()


def timestep_features(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of a (possibly fractional) time ``t`` of shape ``(B,)`` -> ``(B, dim)``, as in DiT's
    ``TimestepEmbedder``: integer DDPM timesteps and EDM's continuous ``c_noise`` alike."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: the normalized tokens scaled and shifted per sample (DiT sec. 3.2, "Block design")."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash kernels on a GPU)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, T, head_dim)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class DiTBlock(nn.Module):
    """A DiT block with adaLN-Zero (DiT sec. 3.2, Fig. 3): the conditioning regresses the shift, scale and gate of
    each branch; the gates start at zero, so that every block starts as the identity."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN, then a linear map of each token to its patch of pixels (DiT sec. 3.2, "Transformer decoder")."""

    def __init__(self, width: int, patch_size: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch_size * patch_size * channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiTDenoiser(nn.Module):
    """Diffusion transformer (DiT, Peebles & Xie 2023): patchify, a fixed 2D sin-cos position embedding, ``depth``
    adaLN-Zero blocks conditioned on time + class, and a zero-initialised linear decoder, so that a fresh DiT
    outputs exactly zero (sec. 3.2). The sizes of Table 1 (S/B/L/XL) are options of the config, not code.

    Written here rather than through diffusers' ``DiTTransformer2DModel``, which drops 10% of the labels itself in
    training mode: here the only label dropout is the DiffusionModule's ``label_dropout``.

    Args:
        sample_shape: Shape of one image ``(C, H, W)``; linked from the data by the CLI.
        num_classes: Number of classes for conditioning (``None``: unconditional); linked from the data.
            One extra embedding, index ``num_classes``, is the "null" label of classifier-free guidance.
        depth: Number of DiT blocks (Table 1: S, B 12, L 24, XL 28).
        hidden_size: Width of the tokens (Table 1: S 384, B 768, L 1024, XL 1152).
        num_heads: Attention heads; must divide ``hidden_size`` (Table 1: S 6, B 12, L 16, XL 16).
        patch_size: Side p of the square patches, one token each: (H / p) (W / p) tokens (sec. 3.2).
        mlp_ratio: Hidden width of each block's MLP over ``hidden_size``.
        frequency_embedding_size: Size of the sinusoidal time features fed to the time embedding's MLP.
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...] = (4, 32, 32),
        num_classes: int | None = None,
        depth: int = 12,
        hidden_size: int = 384,
        num_heads: int = 6,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        frequency_embedding_size: int = 256,
    ) -> None:
        super().__init__()
        check_range("DiTDenoiser", "num_classes", num_classes, 1)
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        if len(self.sample_shape) != 3:
            raise ValueError(
                f"sample_shape {self.sample_shape} has {len(self.sample_shape)} dims, but DiTDenoiser needs 3 "
                "(C, H, W): use MLPDenoiser for flat data."
            )
        options = dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=patch_size)
        options.update(mlp_ratio=mlp_ratio, frequency_embedding_size=frequency_embedding_size)
        for name, value in options.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}: give DiTDenoiser a positive {name}.")
        channels, height, width = self.sample_shape
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by patch_size {patch_size}: choose a patch_size that "
                "divides both sides (or pad the data, e.g. pad_to_32: true)."
            )
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}: choose num_heads that divides "
                "hidden_size."
            )
        if hidden_size % 4:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by 4, which the 2D sin-cos position embedding needs: "
                "choose a multiple of 4."
            )
        if frequency_embedding_size % 2:
            raise ValueError(
                f"frequency_embedding_size {frequency_embedding_size} is odd: choose an even number of sin-cos "
                "features."
            )
        self.patch_size, self.frequency_embedding_size = patch_size, frequency_embedding_size
        self.grid = (height // patch_size, width // patch_size)
        self.x_embedder = nn.Conv2d(channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos_embed", sincos_2d(hidden_size, *self.grid)[None], persistent=False)
        self.t_embedder = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.y_embedder = nn.Embedding(num_classes + 1, hidden_size) if num_classes else None
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(hidden_size, patch_size, channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialisation (sec. 3.2 and its code): Xavier-uniform linear layers and patch embedding,
        N(0, 0.02) time and class embeddings, and adaLN-Zero: every modulation and the decoder start at zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.x_embedder.weight.view(self.x_embedder.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.t_embedder[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder[2].weight, std=0.02)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.weight, std=0.02)
        for layer in [*(block.adaLN_modulation[-1] for block in self.blocks), self.final_layer.adaLN_modulation[-1]]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """``(B, T, p * p * C)`` tokens back to ``(B, C, H, W)`` images."""
        p, (rows, cols), channels = self.patch_size, self.grid, self.sample_shape[0]
        x = x.view(x.shape[0], rows, cols, p, p, channels)
        # contiguous, so that callers may .view() the output (with p = 1 the reshape alone is a strided view)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], channels, rows * p, cols * p).contiguous()

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if self.y_embedder is None and class_labels is not None:
            raise ValueError("class_labels were given but this DiTDenoiser is unconditional (num_classes is None).")
        x = self.x_embedder(x_t).flatten(2).transpose(1, 2) + self.pos_embed.to(x_t.dtype)  # (B, T, width)
        t = t.expand(x_t.shape[0]) if t.dim() == 0 else t  # one time for the batch
        c = self.t_embedder(timestep_features(t, self.frequency_embedding_size).to(x_t.dtype))  # (B, width)
        if self.y_embedder is not None:
            if class_labels is None:  # no label on a conditional model: the null label
                class_labels = torch.full((x_t.shape[0],), self.num_classes, dtype=torch.long, device=x_t.device)
            c = c + self.y_embedder(class_labels)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))
