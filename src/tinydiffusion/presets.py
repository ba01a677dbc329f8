"""Named starting configurations. `--preset NAME` picks one; flags override its fields."""

from __future__ import annotations

import copy
import dataclasses

from .config import DataConfig, DiffusionConfig, NetConfig, RunConfig, TrainConfig
from .errors import UserError

# The reference run: 5 epochs of Fashion-MNIST on a 2-core CPU in under 15 minutes.
# The pixel-unshuffle stem runs the UNet at 14x14 -> 7x7 -> 4x4; see docs/ for the measurements
# that chose it over a full-resolution UNet.
FASHION_MNIST_UNET = NetConfig(
    kind="unet", image_size=28, in_channels=1, num_classes=10,
    base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(1, 2),
    stem_patch=2, upsample_conv=True,
)

# Diffusion Transformers (Peebles & Xie 2023) scaled for 28x28. dit-s costs the same per training
# image as the UNet above on a 2-core CPU (benchmarks/dit_cost.py); dit-b is DiT-S/2's shape, for GPUs.
DIT_S = NetConfig(kind="dit", image_size=28, in_channels=1, num_classes=10, patch_size=4, hidden_size=144,
                  depth=4, num_heads=3, mlp_ratio=4.0)
DIT_B = NetConfig(kind="dit", image_size=28, in_channels=1, num_classes=10, patch_size=2, hidden_size=384,
                  depth=12, num_heads=6, mlp_ratio=4.0)
NETWORKS: dict[str, NetConfig] = {"unet": FASHION_MNIST_UNET, "dit": DIT_S, "dit-s": DIT_S, "dit-b": DIT_B}

# The reference run's process and recipe, shared by the presets derived from it.
REFERENCE_DIFFUSION = DiffusionConfig(schedule="cosine", objective="v", loss_weighting="min-snr")
REFERENCE_TRAIN = TrainConfig(epochs=5, batch_size=128, lr=2e-3, warmup_steps=200, ema_decay=0.999)

PRESETS: dict[str, RunConfig] = {
    "fashion-mnist": RunConfig(
        name="fashion-mnist", net=FASHION_MNIST_UNET, diffusion=REFERENCE_DIFFUSION, train=REFERENCE_TRAIN,
        data=DataConfig(),
    ),
    # The reference run with a Transformer instead of the UNet, at equal training cost per image.
    "fashion-mnist-dit": RunConfig(
        name="fashion-mnist-dit", net=DIT_S, diffusion=REFERENCE_DIFFUSION,
        train=dataclasses.replace(REFERENCE_TRAIN, lr=1e-3), data=DataConfig(),
    ),
    # The bundled model: the same design 1.5x wider, trained much longer on a GPU (see the README).
    "fashion-mnist-large": RunConfig(
        name="fashion-mnist-large", net=dataclasses.replace(FASHION_MNIST_UNET, base_channels=48),
        diffusion=REFERENCE_DIFFUSION,
        train=dataclasses.replace(REFERENCE_TRAIN, epochs=60, batch_size=256, warmup_steps=500, ema_decay=0.9995,
                                  sample_num=100),
        data=DataConfig(),
    ),
    # Tiny: trains in seconds on a CPU; for tests and for trying the command line.
    "smoke": RunConfig(
        name="smoke",
        net=NetConfig(kind="unet", image_size=28, in_channels=1, num_classes=10, base_channels=8,
                      channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), stem_patch=2),
        diffusion=DiffusionConfig(schedule="cosine", timesteps=100, objective="eps"),
        train=TrainConfig(epochs=1, batch_size=16, lr=2e-3, warmup_steps=5, ema_decay=0.9, log_every=5,
                          sample_num=4, sample_steps=5),
        data=DataConfig(),
    ),
}


def with_network(config: RunConfig, name: str) -> RunConfig:
    """Swap in a named network ("unet", "dit", "dit-s", "dit-b"), keeping the data's shape and classes."""
    if name not in NETWORKS:
        raise UserError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}.")
    net = dataclasses.replace(NETWORKS[name], image_size=config.net.image_size, in_channels=config.net.in_channels,
                              num_classes=config.net.num_classes)
    return dataclasses.replace(config, net=net)


def preset_with_network(preset: str, net: str | None) -> RunConfig:
    """A preset with `--net`'s network swapped in. The reference run with its Transformer is the
    fashion-mnist-dit preset (its learning rate suits the Transformer), whichever alias names the net."""
    config = get_preset(preset)
    if net is None:
        return config
    config = with_network(config, net)
    if preset == "fashion-mnist" and config.net == PRESETS["fashion-mnist-dit"].net:
        return get_preset("fashion-mnist-dit")
    return config


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}.")
    return copy.deepcopy(PRESETS[name])
