"""The Diffusion Transformer's settings (Peebles & Xie 2023); the network itself is in dit.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..fields import option
from .base import NetConfig


@dataclass
class DiTConfig(NetConfig):
    kind: str = option("dit", "which network: a name in nets.NETWORKS (unet, dit, ...)")
    patch_size: int = option(2, "DiT: patch side in pixels")
    hidden_size: int = option(192, "DiT: token width")
    depth: int = option(6, "DiT: Transformer blocks")
    num_heads: int = option(3, "DiT: attention heads")
    mlp_ratio: float = option(4.0, "DiT: MLP width as a multiple of the token width")
    learned_pos_embed: bool = option(False, "DiT: learn the position embedding (else fixed sin-cos)")

    def checks(self) -> list[tuple[bool, str]]:
        return super().checks() + [
            (1 <= self.hidden_size <= 16384, "net.hidden_size must be between 1 and 16384"),
            (self.patch_size >= 1, "net.patch_size must be at least 1"),
            (self.patch_size < 1 or self.image_size % self.patch_size == 0,
             f"net.image_size {self.image_size} is not divisible by net.patch_size {self.patch_size}"),
            (1 <= self.depth <= 64, "net.depth must be between 1 and 64"),
            (self.num_heads >= 1 and self.hidden_size % self.num_heads == 0,
             "net.hidden_size must be divisible by net.num_heads"),
            (0 < self.mlp_ratio <= 16 and self.hidden_size * self.mlp_ratio >= 1,
             "net.mlp_ratio must be above 0 and at most 16"),
        ]

    def build(self):
        from .dit import DiT

        return DiT(self)

    def activation_floats(self, training: bool) -> int:
        """Per block: qkv, the attention output, the MLP's hidden layer and the residuals, for every token."""
        tokens = (self.image_size // self.patch_size) ** 2
        block = tokens * self.hidden_size * (6 + 2 * self.mlp_ratio)
        return int(self.depth * block * 2) if training else int(2 * block)

    def fitted_to_size(self, explicit: set[str]) -> DiTConfig:
        """Patches must tile the image: the largest of 4, 2 and 1 that does."""
        if "net.patch_size" not in explicit and self.image_size % self.patch_size:
            return dataclasses.replace(self, patch_size=next(p for p in (4, 2, 1) if self.image_size % p == 0))
        return self
