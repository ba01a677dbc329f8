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

from .base import NetConfig

BYTES_PER_FLOAT = 4


def activation_bytes(config: NetConfig, batch: int, training: bool = False) -> int:
    """Peak bytes of activations for one forward pass (and its backward, if training) over `batch` images;
    each network's config gives its own count (activation_floats)."""
    return batch * config.activation_floats(training) * BYTES_PER_FLOAT


def format_bytes(num: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if num < 1024 or unit == "TiB":
            return f"{num:,.0f} {unit}" if unit == "bytes" else f"{num:,.1f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")
