"""Joining a torchrun job: which process this is, and its device. One process is the ordinary case."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..devices import pick_device
from ..errors import UserError


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun job if there is one: NCCL on GPUs, gloo on CPUs."""
    world_size, device = int(os.environ.get("WORLD_SIZE", "1")), pick_device(device_name)
    if world_size == 1:
        return Distributed(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local process {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
                            "start at most one process per GPU (--nproc_per_node).")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("TINYDIFFUSION_DIST_TIMEOUT", "600")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Distributed(dist.get_rank(), world_size, local_rank), device


def agree(values: list[float], run_dist: Distributed, device: torch.device) -> list[float]:
    """Each value's maximum over the processes, in one collective (none is left waiting alone)."""
    if run_dist.world_size == 1:
        return values
    agreed = torch.tensor(values, device=device, dtype=torch.float64)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return agreed.tolist()


def leave_distributed(timeout_s: float = 30.0) -> None:
    """Close this process's process group, if it joined one. Closing can hang now and then (pytorch/pytorch#75097):
    after `timeout_s` the process goes on without it, and the command ends the process without the interpreter's
    teardown (cli.run), so that a finished run does not wait forever."""
    if not dist.is_initialized():
        return
    closing = threading.Thread(target=dist.destroy_process_group, daemon=True)
    closing.start()
    closing.join(timeout_s)
    if closing.is_alive():
        print(f"warning: the process group did not close in {timeout_s:g} s; this process ends without it.",
              file=sys.stderr)
