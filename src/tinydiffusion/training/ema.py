"""The exponential moving average of the weights, which samples are drawn from."""

from __future__ import annotations

import copy

import torch


class EMA:
    """Exponential moving average of the weights, with the usual warm-up of the decay.

    decay_k = min(decay, (1 + k) / (10 + k)): early on the average follows the weights closely,
    so samples from the EMA are not noise after a few hundred steps.
    """

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = decay
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    def weight_at(self, step: int) -> float:
        """How far the average moves toward the weights at step k: 1 - decay_k."""
        return 1.0 - min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, net: torch.nn.Module, weight: float | torch.Tensor) -> None:
        """ema += weight * (net - ema). A 0-dim tensor weight stays on the device, so the update can be
        skipped (weight 0) without the host looking at the loss, and captured in a CUDA graph."""
        ema_params = list(self.net.parameters())
        params = [p.detach() for p in net.parameters()]
        if isinstance(weight, torch.Tensor):  # _foreach_mul_ takes a tensor scalar in one fused kernel on a GPU
            step = torch._foreach_sub(params, ema_params)
            torch._foreach_mul_(step, weight)
            torch._foreach_add_(ema_params, step)
        else:
            torch._foreach_lerp_(ema_params, params, weight)
        ema_buffers, buffers = list(self.net.buffers()), list(net.buffers())
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)
