"""Baseline networks from other libraries, wrapped in the project's network interface (what the machine is, and
other helpers every benchmark shares, are in common.py).

Each wrapper is `forward(x, t, y) -> tensor` shaped like x (see tinydiffusion.nets), so the
project's Trainer, samplers and benchmarks use it exactly as they use their own networks.
"""

from __future__ import annotations

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


# --- what the benchmarks compare -------------------------------------------------------------

NETWORKS = {  # name -> (label, constructor)
    "ours": ("tinydiffusion fashion-mnist UNet", lambda: build_network(get_preset("fashion-mnist").net)),
    "diffusers": ("diffusers UNet2DModel (32, 64, 128)", DiffusersUNet),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """A freshly initialised network by benchmark name; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return NETWORKS[name][1]()
