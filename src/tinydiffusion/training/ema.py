"""The moving average of the weights, which samples are drawn from: exponential, or a power function."""

from __future__ import annotations

import copy

import numpy as np
import torch


def power_ema_exponent(std: float) -> float:
    """The exponent gamma of a power-function EMA whose width, relative to the steps so far, is `std`.

    Karras et al. 2024 (EDM2), eq. 3: sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)). With s = 1 /
    sigma_rel^2 this is the cubic gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s) = 0, whose largest real root
    is the gamma wanted."""
    s = 1.0 / std**2
    roots = np.roots([1.0, 7.0, 16.0 - s, 12.0 - s])
    return float(roots[np.isreal(roots)].real.max())


class EMA:
    """A moving average of the weights: ema_k = beta_k ema_(k-1) + (1 - beta_k) theta_k after step k (from 0).

    Exponential (std 0): beta_k = min(decay, (1 + k) / (10 + k)), the usual warm-up, so samples from the EMA are
    not noise after a few hundred steps; but in a run of a few thousand steps a decay like 0.999 barely binds.
    Power function (std > 0; Karras et al. 2024, eq. 2): beta_k = (1 - 1 / (k + 1))^(gamma + 1), an average over a
    fixed share of the steps so far, so its length follows the run's, however long that is.
    """

    def __init__(self, net: torch.nn.Module, decay: float, std: float = 0.0):
        self.decay = decay
        self.gamma = power_ema_exponent(std) if std > 0 else None
        self.net = copy.deepcopy(net).eval().requires_grad_(False)

    def weight_at(self, step: int) -> float:
        """How far the average moves toward the weights at step k: 1 - beta_k."""
        if self.gamma is not None:
            return 1.0 - (1.0 - 1.0 / (step + 1)) ** (self.gamma + 1)
        return 1.0 - min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, net: torch.nn.Module, weight: float | torch.Tensor) -> None:
        """ema += weight * (net - ema). A 0-dim tensor weight stays on the device, so the update can be
        skipped (weight 0) without the host looking at the loss."""
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
