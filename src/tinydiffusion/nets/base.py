"""What every network's config has: the data's shape, the classes, dropout, and the hooks each network fills
in. A network is its module (unet.py) and its config (unet_config.py), registered in nets/__init__.py. The
config is plain arithmetic with no torch, so the command line can list its fields without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..fields import option, recorded

MAX_IMAGE_SIZE = 1024
MAX_CLASSES = 100_000
# The parameters of a student's guidance-scale embedding (layers.ConditionEmbedding, which every network names
# `embed`): the part of a student's network its teacher has not.
GUIDANCE_EMBEDDING = "embed.guidance_mlp."
MAX_CHANNELS = 64  # a latent run's network takes its autoencoder's channels (TAEF2's: 32)


@dataclass
class NetConfig:
    kind: str = option("", "the network (set by the network's own config)")
    image_size: int = option(28, "image height and width in pixels")
    in_channels: int = option(1, "image channels: 1 (grey) or 3 (colour); a latent run's: its autoencoder's")
    num_classes: int = option(0, "classes the network is conditioned on (0: unconditional; index num_classes "
                              "means 'no class', for guidance)")
    dropout: float = option(0.0, "dropout probability in the network's blocks")
    guidance_input: bool = recorded(False, "the network also takes the guidance scale, so one evaluation gives a "
                                    "guided prediction (a student of `tinydiffusion distill`)")

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs that a valid config satisfies: the shared ones; networks add theirs."""
        return [
            (4 <= self.image_size <= MAX_IMAGE_SIZE, f"net.image_size must be between 4 and {MAX_IMAGE_SIZE}"),
            (1 <= self.in_channels <= MAX_CHANNELS, "net.in_channels must be 1 (grey) or 3 (colour)"),  # or latents
            (0 <= self.num_classes <= MAX_CLASSES,
             f"net.num_classes must be between 0 (unconditional) and {MAX_CLASSES}"),
            (0.0 <= self.dropout < 1.0, "net.dropout must be in [0, 1)"),
        ]

    def build(self):
        """The network as a torch module: forward(x, t, y=None, guidance=None) -> a tensor shaped like x."""
        raise NotImplementedError

    def activation_floats(self, training: bool) -> int:
        """Peak float32 activations per image of one forward pass (and its backward, if training): an
        estimate from the config alone (nets/memory.py)."""
        raise NotImplementedError

    def fitted_to_size(self, explicit: set[str]) -> NetConfig:
        """This config adjusted to its image_size where the user did not set the field (`explicit` holds the
        dotted names they set); by default unchanged."""
        return self
