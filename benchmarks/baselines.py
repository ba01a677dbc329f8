"""Baseline networks from other libraries, wrapped in the project's network interface, and what the benchmarks share.

Each wrapper is `forward(x, t, y) -> tensor` shaped like x (see tinydiffusion.nets), so the
project's Trainer, samplers and benchmarks use it exactly as they use their own networks.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch
from diffusers import UNet2DModel
from torch import nn

from tinydiffusion.nets import build_network
from tinydiffusion.presets import get_preset

NUM_CLASSES = 10  # Fashion-MNIST; class index NUM_CLASSES is "no class" (classifier-free guidance)


class DiffusersUNet(nn.Module):
    """diffusers' UNet2DModel at the size usually trained on 28x28 MNIST-like data (about 3.9M parameters).

    Full resolution (28 -> 14 -> 7), two ResNet blocks per level, attention at 7x7 only, diffusers'
    defaults for everything else; `num_class_embeds=11` adds a class embedding to the timestep
    embedding, the same conditioning as the project's UNet.
    """

    def __init__(self):
        super().__init__()
        self.unet = UNet2DModel(
            sample_size=28, in_channels=1, out_channels=1,
            block_out_channels=(32, 64, 128), layers_per_block=2,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            num_class_embeds=NUM_CLASSES + 1,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            y = torch.full((x.shape[0],), NUM_CLASSES, dtype=torch.long, device=x.device)
        return self.unet(x, t, class_labels=y).sample


# --- what the benchmarks compare, and how they label the machine ---------------------------------

NETWORKS = {  # name -> (label, constructor)
    "ours": ("tinydiffusion fashion-mnist UNet", lambda: build_network(get_preset("fashion-mnist").net)),
    "diffusers": ("diffusers UNet2DModel (32, 64, 128)", DiffusersUNet),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised network by benchmark name; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return NETWORKS[name][1]()


def lscpu_fields() -> dict[str, str]:
    """lscpu's "Key: value" lines (Model name, CPU(s), Flags, caches, ...) in the C locale; empty without lscpu."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                               env={**os.environ, "LC_ALL": "C"}).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {key.strip(): value.strip() for key, colon, value in (line.partition(":") for line in lines) if colon}


def cpu_model() -> str:
    """Which CPU this is, by name: /proc/cpuinfo's model name, else lscpu's, else what Python's platform knows."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return lscpu_fields().get("Model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's instruction-set extensions (/proc/cpuinfo's flags); empty where they are not known."""
    try:
        return next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("flags"))
    except (OSError, StopIteration):
        return lscpu_fields().get("Flags", "").split()


def machine_description() -> str:
    """CPU model, logical CPUs and OS, for the header of every benchmark report."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}"
