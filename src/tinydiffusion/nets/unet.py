"""A small UNet in the DDPM form (Ho et al. 2020, appendix B; Ronneberger et al. 2015).

Residual blocks with GroupNorm and SiLU take the timestep (and class) embedding; self-attention
runs at the low resolutions named in `attention_levels`; every encoder activation is kept and
concatenated into the decoder (skip connections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, group_norm, zero_init

if TYPE_CHECKING:  # the config builds the network (its build()); the network only reads it
    from .unet_config import UNetConfig


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        # Heads of about head_dim channels, as many as divide the width evenly (112 channels: 2 heads of 56).
        self.num_heads = max(1, channels // head_dim)
        while channels % self.num_heads:
            self.num_heads -= 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [B, heads, HW, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        base = config.base_channels
        emb_dim = 4 * base
        self.embed = ConditionEmbedding(base, emb_dim, config.num_classes, config.guidance_input)
        # An optional pixel-unshuffle stem (space-to-depth, Shi et al. 2016) runs the whole UNet at
        # half resolution: 28x28x1 becomes 14x14x4. On a CPU this cuts the cost per image about 4x.
        self.patch = config.stem_patch
        stem_channels = config.in_channels * self.patch**2
        self.conv_in = nn.Conv2d(stem_channels, base, 3, padding=1)

        widths = [base * m for m in config.channel_mults]
        self.down = nn.ModuleList()
        skip_widths, ch = [base], base
        for level, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                self.down.append(self._block(ch, width, emb_dim, level))
                ch = width
                skip_widths.append(ch)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_widths.append(ch)

        self.mid = nn.ModuleList([
            ResBlock(ch, ch, emb_dim, config.dropout), SelfAttention(ch), ResBlock(ch, ch, emb_dim, config.dropout),
        ])

        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for _ in range(config.num_res_blocks + 1):
                self.up.append(self._block(ch + skip_widths.pop(), widths[level], emb_dim, level))
                ch = widths[level]
            if level > 0:
                self.up.append(Upsample(ch, config.upsample_conv))

        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(nn.Conv2d(ch, stem_channels, 3, padding=1))

    def _block(self, in_ch: int, out_ch: int, emb_dim: int, level: int) -> nn.Module:
        res = ResBlock(in_ch, out_ch, emb_dim, self.config.dropout)
        if level in self.config.attention_levels:
            return AttentionResBlock(res, SelfAttention(out_ch))
        return res

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, y, guidance)
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, (ResBlock, AttentionResBlock)) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, skips[-1].shape[-2:])
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


class AttentionResBlock(nn.Module):
    def __init__(self, res: ResBlock, attn: SelfAttention):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the skip's size (28 -> 14 -> 7 -> 14 needs no special case), then a conv."""

    def __init__(self, channels: int, with_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else nn.Identity()

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))
