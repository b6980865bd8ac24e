"""A convolutional U-Net denoiser for images: an adapter over diffusers' ``UNet2DModel``."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import Tensor, nn

from lightning_diffusion.errors import at_least, check_range


class UNetDenoiser(nn.Module):
    """U-Net denoiser (Ronneberger et al. 2015, as used by Ho et al. 2020), built by diffusers' ``UNet2DModel``.

    Args:
        sample_shape: Shape of one image ``(C, H, W)``; linked from the data by the CLI.
        num_classes: Number of classes for conditioning (``None``: unconditional); linked from the data.
            One extra embedding, index ``num_classes``, is the "null" label of classifier-free guidance.
        block_out_channels: Channels of each U-Net level; every level but the last halves the resolution.
        down_block_types: diffusers down block of each level (``None``: ``DownBlock2D``, or
            ``AttnDownBlock2D`` at the ``attention_levels``).
        up_block_types: diffusers up block of each level, deepest first (``None``: ``UpBlock2D``, or
            ``AttnUpBlock2D`` at the ``attention_levels``).
        attention_levels: Levels (0 = full resolution) with self-attention when the block types are ``None``.
        layers_per_block: Residual blocks per level.
        attention_head_dim: Channels per attention head.
        norm_num_groups: Groups of the GroupNorms; must divide every entry of ``block_out_channels``.
        dropout: Dropout inside the residual blocks.
        channels_last: Run the convolutions in ``torch.channels_last`` memory format (off: see notes/benchmarks.md
            for its speed on a GPU).
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...] = (1, 28, 28),
        num_classes: int | None = None,
        block_out_channels: tuple[int, ...] = (32, 64, 64),
        down_block_types: list[str] | None = None,
        up_block_types: list[str] | None = None,
        attention_levels: tuple[int, ...] = (),
        layers_per_block: int = 2,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        dropout: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        owner = "UNetDenoiser"
        at_least(owner, 1, num_classes=num_classes, layers_per_block=layers_per_block, norm_num_groups=norm_num_groups)
        at_least(owner, 1, attention_head_dim=attention_head_dim, block_out_channels=min(block_out_channels, default=0))
        check_range(owner, "dropout", dropout, 0, 1, high_open=True)
        self.sample_shape = tuple(sample_shape)
        self.num_classes = num_classes
        self.channels_last = channels_last
        if len(self.sample_shape) != 3:
            raise ValueError(
                f"sample_shape {self.sample_shape} has {len(self.sample_shape)} dims, but UNetDenoiser needs 3 "
                "(C, H, W): use MLPDenoiser for flat data."
            )
        channels, height, width = self.sample_shape
        levels = len(block_out_channels)
        factor = 2 ** (levels - 1)  # the last level does not downsample
        if height % factor or width % factor:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by {factor}, the downsampling factor of {levels} "
                f"UNet levels: pad the data to a multiple of {factor} (e.g. pad_to_32: true) or use fewer "
                "block_out_channels."
            )
        bad_levels = [i for i in attention_levels if not 0 <= i < levels]
        if bad_levels:
            raise ValueError(
                f"attention_levels {bad_levels} are not among the {levels} UNet levels: use 0 to {levels - 1}."
            )
        down_block_types = down_block_types or [
            "AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(levels)
        ]
        up_block_types = up_block_types or [
            "AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(levels))
        ]
        if not len(down_block_types) == len(up_block_types) == levels:
            raise ValueError(
                f"{len(down_block_types)} down_block_types and {len(up_block_types)} up_block_types do not match the "
                f"{levels} levels of block_out_channels: give one block type of each kind per level."
            )
        bad_channels = [c for c in block_out_channels if c % norm_num_groups]
        if bad_channels:
            raise ValueError(
                f"norm_num_groups {norm_num_groups} does not divide block_out_channels {bad_channels}: "
                "choose a norm_num_groups that divides every block's channels."
            )
        self.unet = UNet2DModel(
            sample_size=height if height == width else (height, width),
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            dropout=dropout,
            num_class_embeds=num_classes + 1 if num_classes else None,  # nn.Embedding (class_embed_type None)
        )
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)

    def forward(self, x_t: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if self.num_classes and class_labels is None:
            class_labels = torch.full((x_t.shape[0],), self.num_classes, dtype=torch.long, device=x_t.device)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        # back to the default layout, so that callers may .view() the output
        return self.unet(x_t, t, class_labels=class_labels).sample.contiguous()
