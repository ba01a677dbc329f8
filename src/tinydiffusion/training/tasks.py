"""What a training step minimises. The Trainer's loop (steps, AdamW, EMA, checkpoints, signals, torchrun) is the
same for every task; a task says what it draws per image and what its loss is:

    task.draw(batch, generator, device) -> a tuple of per-image tensors, drawn for the whole global batch
    task.loss(model, x0, y, noise, *drawn) -> the batch's mean loss (0-dim)

Denoising trains a diffusion model; distillation.py's Distillation trains a few-step student from a teacher.
"""

from __future__ import annotations

import torch


class Denoising:
    """The diffusion loss (Ho et al. 2020, eq. 14, in diffusion.training_loss): a time t per image."""

    def __init__(self, diffusion):
        self.diffusion = diffusion

    def draw(self, batch: int, generator: torch.Generator, device) -> tuple[torch.Tensor, ...]:
        return (self.diffusion.draw_times(batch, generator, device),)

    def loss(self, model, x0: torch.Tensor, y: torch.Tensor | None, noise: torch.Tensor,
             times: torch.Tensor) -> torch.Tensor:
        return self.diffusion.training_loss(model, x0, times, noise, y)


def task_for(config, diffusion, device: torch.device):
    """The task a run's config describes: a student's distillation (config.distill.steps; a removed method's is
    refused), else denoising."""
    if config.distill.steps:
        from ..distill_methods import check_trainable
        from .distillation import Distillation

        check_trainable(config.distill.method)
        return Distillation.from_config(config, diffusion, device)
    return Denoising(diffusion)
