"""A Diffusion Transformer, DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

The image is cut into patch_size x patch_size patches, each embedded as one token (a ViT, Dosovitskiy
et al. 2021); `depth` Transformer blocks take the timestep (and class) through adaptive LayerNorm with
zero-initialised gates (adaLN-Zero, sec. 3.2), and a final linear layer turns each token back into
its patch. Everything that ends a residual branch starts at zero, so a fresh DiT outputs exactly zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionEmbedding, sinusoidal_embedding, zero_init

if TYPE_CHECKING:  # the config builds the network (its build()); the network only reads it
    from .dit_config import DiTConfig

# Sinusoidal features fed to the timestep MLP, as in the paper's code (independent of the width).
TIME_FREQ_DIM = 256


def sincos_pos_embed_2d(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D position embedding [grid_size**2, dim], rows in raster order.

    Half the features encode the patch's row and half its column, each with the 1-D sinusoids of
    Vaswani et al. 2017 (the MAE/DiT form), so nearby patches get similar vectors.
    """
    coords = torch.arange(grid_size, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    row_emb = sinusoidal_embedding(rows.flatten(), dim // 2)
    col_emb = sinusoidal_embedding(cols.flatten(), dim - dim // 2)
    return torch.cat([row_emb, col_emb], dim=1)


def xavier_init(layer: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights and a zero bias, as the paper's code sets every Transformer linear."""
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # `1 + scale`, so that a zero modulation leaves the normalised tokens unchanged.
    return x * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = xavier_init(nn.Linear(dim, 3 * dim))
        self.proj = xavier_init(nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, N, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """Pre-norm Transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, fig. 3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        # No affine LayerNorm parameters: the conditioning supplies the shift and scale.
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            xavier_init(nn.Linear(dim, hidden)),
            nn.GELU(approximate="tanh"),
            xavier_init(nn.Linear(hidden, dim)),
        )
        self.dropout = nn.Dropout(dropout)  # on each residual branch; the paper uses none
        # Zero gates make the block the identity at init, which the paper found trains best (sec. 3.2).
        self.modulation = zero_init(nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mods = self.modulation(cond)[:, None].chunk(6, dim=-1)  # each [B, 1, dim], broadcast over tokens
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = mods
        x = x + gate_attn * self.dropout(self.attn(modulate(self.norm1(x), shift_attn, scale_attn)))
        x = x + gate_mlp * self.dropout(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = zero_init(nn.Linear(dim, 2 * dim))
        self.linear = zero_init(nn.Linear(dim, out_features))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        dim, self.patch = config.hidden_size, config.patch_size
        self.grid = config.image_size // self.patch
        # A strided conv is the patchify-and-embed linear layer of a ViT, applied to every patch.
        self.patch_embed = nn.Conv2d(config.in_channels, dim, self.patch, stride=self.patch)
        pos = sincos_pos_embed_2d(self.grid, dim)[None]
        if config.learned_pos_embed:
            self.pos_embed = nn.Parameter(pos)  # starts from the sin-cos table rather than noise
        else:
            self.register_buffer("pos_embed", pos, persistent=False)  # rebuilt from the config on load
        self.embed = ConditionEmbedding(TIME_FREQ_DIM, dim, config.num_classes, config.guidance_input)
        self.blocks = nn.ModuleList(DiTBlock(dim, config.num_heads, config.mlp_ratio, config.dropout)
                                    for _ in range(config.depth))
        self.final = FinalLayer(dim, self.patch**2 * config.in_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the paper's code: the patch embedding as a Xavier-initialised linear layer over the
        # flattened patch, and N(0, 0.02) for the timestep MLP and the class table.
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.embed.time_mlp[0], self.embed.time_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        if self.embed.class_embedding is not None:
            nn.init.normal_(self.embed.class_embedding.weight, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # [B, N, dim]
        # Every adaLN linear reads SiLU(c); applying it once here is the same as once per block.
        cond = F.silu(self.embed(t, y, guidance))
        for block in self.blocks:
            tokens = block(tokens, cond)
        out = self.final(tokens, cond)  # [B, N, patch**2 * C]
        # Unpatchify: channel index c * patch**2 + i * patch + j is pixel (i, j) of channel c's patch.
        out = out.transpose(1, 2).reshape(x.shape[0], -1, self.grid, self.grid)
        return F.pixel_shuffle(out, self.patch)
