"""Networks. Each one is `forward(x, t, y=None, guidance=None) -> tensor` shaped like x, and knows nothing
about noise.

`x` is [B, C, H, W] in model space, `t` a float tensor [B] of (possibly fractional) step indices in
[0, T), `y` an optional long tensor [B] of class indices (index `num_classes` means "no class"), and
`guidance` the guidance scales [B], taken only by a network with `guidance_input` (a distilled student).

A network is its module and its config class (which builds it), named in NETWORKS: adding one means those
two files and one line here. This package imports no torch until a network is built.
"""

from __future__ import annotations

from ..errors import UserError
from .base import GUIDANCE_EMBEDDING, NetConfig
from .dit_config import DiTConfig
from .unet_config import UNetConfig

NETWORKS: dict[str, type[NetConfig]] = {"unet": UNetConfig, "dit": DiTConfig}


def network_config(kind: str) -> type[NetConfig]:
    """The config class of a registered network."""
    if kind not in NETWORKS:
        raise UserError(f"net.kind must be one of {', '.join(NETWORKS)}, not {kind!r}.")
    return NETWORKS[kind]


def build_network(config: NetConfig):
    """The one place that turns a network's config into a module."""
    return config.build()


def count_parameters(net) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["GUIDANCE_EMBEDDING", "NETWORKS", "DiTConfig", "NetConfig", "UNetConfig", "build_network",
           "count_parameters", "network_config"]
