"""Building blocks shared by the networks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of (possibly fractional) timesteps t [B] -> [B, dim].

    Vaswani et al. 2017, sec. 3.5, as used for timesteps by Ho et al. 2020.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ConditionEmbedding(nn.Module):
    """Timestep (through an MLP) plus an optional class embedding, summed into one vector.

    Class index `num_classes` is the learned "no class" token used for classifier-free guidance;
    `y=None` means "no class" for the whole batch. A distilled student also takes the guidance scale w
    (Meng et al. 2023, sec. 4.1: w embedded like the time and added to it); its MLP ends in zeros, so a
    student made from its teacher's weights starts as the teacher's conditional model.
    """

    GUIDANCE_SCALE = 100.0  # w in [0, ~10] spread over the sinusoid's periods as timesteps are

    def __init__(self, freq_dim: int, dim: int, num_classes: int = 0, guidance_input: bool = False):
        super().__init__()
        self.freq_dim = freq_dim
        self.num_classes = num_classes
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.class_embedding = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None
        self.guidance_mlp = (nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), zero_init(nn.Linear(dim, dim)))
                             if guidance_input else None)

    def forward(self, t: torch.Tensor, y: torch.Tensor | None, guidance: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(sinusoidal_embedding(t, self.freq_dim))
        if self.class_embedding is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, device=t.device, dtype=torch.long)
            emb = emb + self.class_embedding(y)
        if self.guidance_mlp is not None:
            if guidance is None:
                raise ValueError("this network takes the guidance scale as an input; pass guidance=[B] scales.")
            emb = emb + self.guidance_mlp(sinusoidal_embedding(guidance * self.GUIDANCE_SCALE, self.freq_dim))
        return emb


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (Wu & He 2018)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, so the residual branch it ends starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
