"""How much memory a network's activations need: an estimate made from the config alone, before anything
is allocated, so that a config asking for 1024x1024 images in batches of 500 is refused with a sentence
instead of taking the machine down. Plain arithmetic: no torch, no network built.

The estimate counts float32 feature maps: those kept for the UNet's skip connections (or the DiT's
tokens), a working set at the widest level, and, when training, everything autograd keeps for the
backward pass. Attention matrices are not counted: PyTorch's fused attention does not materialise
them. The factors were checked against the peak memory of real forward and backward passes on a CPU
(tests/test_abuse.py keeps the estimate within a factor of two of a measured pass).
"""

from __future__ import annotations

import math

from ..config import NetConfig

BYTES_PER_FLOAT = 4
WORKING_COPIES = 6  # a residual block's temporaries at once: norms, activations, conv outputs, the concatenation
SAVED_PER_BLOCK = 10  # feature maps autograd keeps per residual block (norms, SiLUs, convs, the embedding add)


def activation_bytes(config: NetConfig, batch: int, training: bool = False) -> int:
    """Peak bytes of activations for one forward pass (and its backward, if training) over `batch` images."""
    per_image = _unet_floats(config, training) if config.kind == "unet" else _dit_floats(config, training)
    return batch * per_image * BYTES_PER_FLOAT


def _unet_floats(n: NetConfig, training: bool) -> int:
    size = n.image_size // n.stem_patch
    maps = [n.base_channels * size * size]  # conv_in's output, kept as the first skip
    widest = maps[0]
    for level, mult in enumerate(n.channel_mults):
        side = math.ceil(size / 2**level)
        width = n.base_channels * mult
        maps += [width * side * side] * n.num_res_blocks
        if level < len(n.channel_mults) - 1:
            maps.append(width * math.ceil(side / 2) ** 2)  # the downsampled map, kept as a skip
        widest = max(widest, 2 * width * side * side)  # a decoder block reads [h, skip] concatenated
    skips = sum(maps)
    if training:  # the decoder has one block more per level than the encoder; each keeps its inputs for backward
        return SAVED_PER_BLOCK * 2 * skips
    return skips + WORKING_COPIES * widest


def _dit_floats(n: NetConfig, training: bool) -> int:
    tokens = (n.image_size // n.patch_size) ** 2
    block = tokens * n.hidden_size * (6 + 2 * n.mlp_ratio)  # qkv, attention output, MLP hidden, residuals
    if training:
        return int(n.depth * block * 2)
    return int(2 * block)


def format_bytes(num: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if num < 1024 or unit == "TiB":
            return f"{num:,.0f} {unit}" if unit == "bytes" else f"{num:,.1f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")
