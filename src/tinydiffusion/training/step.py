"""One training step, read top to bottom: the loss of a batch (the task's: tasks.py), its gradients, AdamW, and
the EMA. A plain function of what it touches, bound to the run's parts once and called for every batch. Nothing in it
waits for the device: a non-finite loss skips the update through tensors, and the host reads the loss later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .state import RunState


@dataclass
class StepSettings:
    grad_clip: float  # clip the gradient norm to this (0: off)
    bf16: bool  # autocast the forward pass to bfloat16
    world_size: int  # processes that each hold a slice of the global batch
    found_inf: torch.Tensor | None  # fused AdamW's skip flag, set on the device; None: the host decides


def train_step(model, net, task, optimizer, ema, settings: StepSettings, ema_weight: torch.Tensor,
               x0: torch.Tensor, y: torch.Tensor | None, noise: torch.Tensor, *drawn: torch.Tensor) -> torch.Tensor:
    """Returns the global batch's loss (0-dim, on the device). `model` is what runs the forward pass (the
    network, or its DDP or compiled wrapper); `net` holds the weights that are clipped and averaged; `drawn`
    is what the task drew per image (the times t, for denoising)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=settings.bf16):
        loss = task.loss(model, x0, y, noise, *drawn)
    loss.backward()
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), settings.grad_clip)

    global_loss = loss.detach().float()
    if settings.world_size > 1:  # every rank logs the global batch's loss and agrees on skipping
        dist.all_reduce(global_loss)  # a non-finite loss on any rank makes the sum non-finite
        global_loss = global_loss / settings.world_size
    finite = torch.isfinite(global_loss)

    # A non-finite loss skips the update. With fused AdamW the skip is decided on the device (found_inf, as
    # torch.amp.GradScaler does it), so the host never waits for the loss; otherwise the host checks.
    if settings.found_inf is not None:
        settings.found_inf.copy_(~finite)
        optimizer.found_inf = settings.found_inf
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif finite:
        optimizer.step()
    ema.update(net, ema_weight * finite)  # weight 0 on a skipped step: the average stays put
    return global_loss


def bind_step(run: RunState) -> tuple[Callable[..., torch.Tensor], torch.Tensor]:
    """The step bound to the run's parts once, and the EMA weight it reads each step (a tensor: a step needs no
    host-device synchronisation). The DDP or compiled wrapper is made here, after a checkpoint is restored."""
    train_cfg, options, device = run.config.train, run.options, run.device
    model = run.net
    if run.dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(run.net, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    if options["compile"]:
        model = torch.compile(model, mode=train_cfg.compile_mode)
    ema_weight = torch.zeros((), device=device)
    found_inf = torch.zeros((), device=device) if options["fused_adamw"] else None  # 1.0: skip the update
    settings = StepSettings(grad_clip=train_cfg.grad_clip, bf16=options["bf16"], world_size=run.dist.world_size,
                            found_inf=found_inf)
    step = functools.partial(train_step, model, run.net, run.task, run.optimizer, run.ema, settings, ema_weight)
    return step, ema_weight
