"""The UNet's settings (Ho et al. 2020, appendix B, scaled down); the network itself is in unet.py."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..fields import option
from .base import NetConfig

WORKING_COPIES = 6  # a residual block's temporaries at once: norms, activations, conv outputs, the concatenation
SAVED_PER_BLOCK = 10  # feature maps autograd keeps per residual block (norms, SiLUs, convs, the embedding add)


@dataclass
class UNetConfig(NetConfig):
    kind: str = option("unet", "which network: a name in nets.NETWORKS (unet, dit, ...)")
    base_channels: int = option(32, "UNet: channels at full resolution")
    channel_mults: tuple[int, ...] = option((1, 2, 2), "UNet: channel multiplier of each resolution level")
    num_res_blocks: int = option(1, "UNet: residual blocks per level")
    attention_levels: tuple[int, ...] = option((2,), "UNet: levels (0 = full resolution) with self-attention")
    upsample_conv: bool = option(True, "UNet: a 3x3 conv after each nearest-neighbour upsampling")
    stem_patch: int = option(1, "UNet: 2 pixel-unshuffles the input and runs the UNet at half resolution")

    def checks(self) -> list[tuple[bool, str]]:
        levels = len(self.channel_mults)
        return super().checks() + [
            (1 <= self.base_channels <= 4096, "net.base_channels must be between 1 and 4096"),
            (1 <= levels <= 8 and all(1 <= m <= 64 for m in self.channel_mults),
             "net.channel_mults must be 1 to 8 integers between 1 and 64"),
            (all(0 <= level < levels for level in self.attention_levels),
             f"net.attention_levels must name levels of the UNet, 0 to {levels - 1} "
             f"(net.channel_mults has {levels})"),
            (self.stem_patch >= 1, "net.stem_patch must be at least 1"),
            (self.stem_patch < 1 or (self.stem_patch <= self.image_size and self.image_size % self.stem_patch == 0),
             f"net.image_size {self.image_size} is not divisible by net.stem_patch {self.stem_patch}"),
            (1 <= self.num_res_blocks <= 16, "net.num_res_blocks must be between 1 and 16"),
        ]

    def build(self):
        from .unet import UNet

        return UNet(self)

    def activation_floats(self, training: bool) -> int:
        """The feature maps kept for the skip connections, and a working set at the widest level; when
        training, what every block keeps for backward."""
        size = self.image_size // self.stem_patch
        maps = [self.base_channels * size * size]  # conv_in's output, kept as the first skip
        widest = maps[0]
        for level, mult in enumerate(self.channel_mults):
            side = math.ceil(size / 2**level)
            width = self.base_channels * mult
            maps += [width * side * side] * self.num_res_blocks
            if level < len(self.channel_mults) - 1:
                maps.append(width * math.ceil(side / 2) ** 2)  # the downsampled map, kept as a skip
            widest = max(widest, 2 * width * side * side)  # a decoder block reads [h, skip] concatenated
        skips = sum(maps)
        if training:  # the decoder has one block more per level than the encoder; each keeps its inputs
            return SAVED_PER_BLOCK * 2 * skips
        return skips + WORKING_COPIES * widest

    def fitted_to_size(self, explicit: set[str]) -> UNetConfig:
        """The pixel-unshuffle stem needs an even image size; at odd sizes it is dropped."""
        if "net.stem_patch" not in explicit and self.image_size % self.stem_patch:
            return dataclasses.replace(self, stem_patch=1)
        return self
