"""Networks. Each one is `forward(x, t, y=None) -> tensor` shaped like x, and knows nothing about noise.

`x` is [B, C, H, W] in model space, `t` a float tensor [B] of (possibly fractional) timesteps in
[0, T), `y` an optional long tensor [B] of class indices (index `num_classes` means "no class").
"""

from __future__ import annotations

from torch import nn

from ..config import NetConfig


def build_network(config: NetConfig) -> nn.Module:
    """The one place that turns a NetConfig into a module."""
    if config.kind == "unet":
        from .unet import UNet

        return UNet(config)
    if config.kind == "dit":
        from .dit import DiT

        return DiT(config)
    from ..errors import UserError

    raise UserError(f"unknown network kind {config.kind!r}; use 'unet' or 'dit'.")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
