"""A run in training as one object, RunState: what the Trainer builds once and hands, by name, to the parts that
save it (checkpoints.py), draw its batches (batches.py) and take its steps (step.py); and how it is built, from the
seed, before a checkpoint may be restored into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..devices import memory_of
from ..errors import UserError
from ..nets import GUIDANCE_EMBEDDING, build_network, count_parameters
from ..nets.memory import activation_bytes, format_bytes
from .distributed import Distributed
from .ema import EMA
from .loss_watch import LossWatch
from .metrics_log import MetricsLog
from .tasks import task_for


@dataclass
class RunState:
    config: RunConfig  # as the run goes on: the data it trains on and its time budget's plan are recorded here
    run_dir: Path
    net: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the run's draws (batches.py), shared by every process
    task: object  # what a step minimises (tasks.py)
    losses: LossWatch
    metrics: MetricsLog
    options: dict  # the speed options this run resolved (options.py)
    dist: Distributed
    device: torch.device
    step: int = 0  # the steps taken


def new_state(config: RunConfig, run_dir: Path, net: torch.nn.Module | None, diffusion, options: dict,
              dist: Distributed, device: torch.device, tensorboard=None) -> RunState:
    """The run at step 0, from its seed: its task, the network (or `net`), its EMA and AdamW, the run's
    generator, drawn in that order."""
    train_cfg = config.train
    torch.manual_seed(train_cfg.seed)
    task = task_for(config, diffusion, device)  # denoising, or a student's distillation
    net = (net if net is not None else build_network(config.net)).to(device)
    if options["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    return RunState(config, run_dir, net, EMA(net, train_cfg.ema_decay, train_cfg.ema_std),
                    adamw(parameter_groups(net, config), train_cfg, options),
                    torch.Generator(device=device).manual_seed(train_cfg.seed), task,
                    LossWatch(train_cfg.on_nan, run_dir), MetricsLog(run_dir, tensorboard), options, dist, device)


def parameter_groups(net: torch.nn.Module, config: RunConfig) -> list[dict]:
    """AdamW's parameter groups, each with its share of the schedule's learning rate (lr_scale) and the step it
    starts training at (from_step): one group, or for a student with distill.guidance_lr or guidance_warmup, its
    guidance embedding in a second. That embedding is new and starts at zero while the rest is its teacher's; at
    the student's fine-tuning rate the rest learns the average over the guidance scales first, and the embedding
    then barely moves: the student draws alike at every scale it is asked for (docs/reports/distillation.md)."""
    d = config.distill
    new = {name for name, _ in net.named_parameters() if name.startswith(GUIDANCE_EMBEDDING)}
    if not new or not (d.guidance_lr or d.guidance_warmup):
        return [{"params": list(net.parameters()), "lr_scale": 1.0, "from_step": 0}]
    return [{"params": [p for name, p in net.named_parameters() if name not in new], "lr_scale": 1.0,
             "from_step": d.guidance_warmup},
            {"params": [p for name, p in net.named_parameters() if name in new],
             "lr_scale": d.guidance_lr / config.train.lr if d.guidance_lr else 1.0, "from_step": 0}]


def adamw(groups: list[dict], train_cfg, options: dict) -> torch.optim.AdamW:
    """The run's optimizer over parameter_groups."""
    for group in groups:
        group["lr"] = train_cfg.lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, betas=(0.9, 0.999),
                             fused=options["fused_adamw"])


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, step: int) -> None:
    """Each group's share of the schedule's rate `lr` at `step` (0 before the group starts training)."""
    for group in optimizer.param_groups:  # a checkpoint saved before the groups has one, without the keys
        group["lr"] = lr * group.get("lr_scale", 1.0) if step >= group.get("from_step", 0) else 0.0


def check_training_memory(config: RunConfig, local_batch: int, device: torch.device,
                          net: torch.nn.Module | None = None) -> None:
    """Refuse, before anything is allocated, a network or batch that cannot fit: each parameter with its
    gradient, AdamW's two moments and the EMA copy (5 floats), plus the activations kept for backward."""
    if net is None:
        with torch.device("meta"):  # shapes only: a network of billions of parameters costs nothing here
            net = build_network(config.net)
    parameters = count_parameters(net)
    needed = 5 * 4 * parameters + activation_bytes(config.net, local_batch, training=True)
    available = memory_of(device)
    if needed > available:
        raise UserError(f"training this network ({parameters / 1e6:,.2f}M parameters) on batches of {local_batch} "
                        f"needs about {format_bytes(needed)}, more than the {format_bytes(available)} of memory on "
                        f"{device}; make the network or --batch-size smaller.")
