"""Which device runs the work, and how much memory it has: asked by training, sampling and the command line."""

from __future__ import annotations

import os

import torch

from .config import DEVICE_PATTERN
from .errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if DEVICE_PATTERN.fullmatch(name) is None:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no GPU is available; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"there is no {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 onwards.")
    return device


def memory_of(device: torch.device) -> int:
    """Bytes of memory on `device`: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
