"""The only place that knows the model works in [-1, 1]: uint8 pixels in, model space out, and back."""

from __future__ import annotations

import torch


def to_model_space(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float in [-1, 1]."""
    return pixels.float().div(127.5).sub(1.0)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model-space float in [-1, 1] (clipped) -> uint8 pixels in [0, 255]."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
