"""Named starting configurations. `--preset NAME` picks one; flags override its fields.

A preset changes config.py's plain field defaults into a measured recipe; what sampling does when not told is
defaults.py's, and the bounds on any value are bounds.py's."""

from __future__ import annotations

import copy
import dataclasses
import math

from .config import DataConfig, DiffusionConfig, RunConfig, TrainConfig
from .errors import UserError
from .nets import DiTConfig, NetConfig, UNetConfig

# The reference run: 5 epochs of Fashion-MNIST on a 2-core CPU in under 15 minutes.
# The pixel-unshuffle stem runs the UNet at 14x14 -> 7x7 -> 4x4; see docs/ for the measurements
# that chose it over a full-resolution UNet.
FASHION_MNIST_UNET = UNetConfig(
    image_size=28, in_channels=1, num_classes=10,
    base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(1, 2),
    stem_patch=2, upsample_conv=True,
)

# Diffusion Transformers (Peebles & Xie 2023) scaled for 28x28. dit-s costs the same per training
# image as the UNet above on a 2-core CPU (benchmarks/dit_cost.py); dit-b is DiT-S/2's shape, for GPUs.
DIT_S = DiTConfig(image_size=28, in_channels=1, num_classes=10, patch_size=4, hidden_size=144,
                  depth=4, num_heads=3, mlp_ratio=4.0)
DIT_B = DiTConfig(image_size=28, in_channels=1, num_classes=10, patch_size=2, hidden_size=384,
                  depth=12, num_heads=6, mlp_ratio=4.0)


def sized_unet(image_size: int, channels: int = 1) -> UNetConfig:
    """The reference UNet (its 2x2 pixel-unshuffle stem included) for images of this size and channels: above 32
    pixels a fourth level, so that the lowest resolution stays 4 pixels (64 -> 32 -> 16 -> 8 -> 4, attention at
    the two lowest). A larger stem patch (4 at 64 px) was measured and learns far worse: its 32-channel top level
    must predict 48 values a position (docs/reports/colour-recipes.md)."""
    net = dataclasses.replace(FASHION_MNIST_UNET, image_size=image_size, in_channels=channels)
    if image_size > 32:
        net = dataclasses.replace(net, channel_mults=(1, 2, 2, 2), attention_levels=(2, 3))
    return net


def latent_unet(latent_size: int, channels: int) -> UNetConfig:
    """The UNet for an autoencoder's latents (`train --autoencoder`): they are already 1/8 of the image's size, so it
    runs at their full size (no pixel-unshuffle stem; 8 -> 4 -> 2 at 64 px), twice as wide as the reference."""
    return dataclasses.replace(FASHION_MNIST_UNET, image_size=latent_size, in_channels=channels, stem_patch=1,
                               base_channels=64)


NAMED_NETWORKS: dict[str, NetConfig] = {"unet": FASHION_MNIST_UNET, "dit": DIT_S, "dit-s": DIT_S, "dit-b": DIT_B}

# The reference run's process and recipe, shared by the presets derived from it.
REFERENCE_DIFFUSION = DiffusionConfig(schedule="cosine", objective="v", loss_weighting="min-snr")
REFERENCE_TRAIN = TrainConfig(warmup_steps=200)  # 5 epochs of 128 images at lr 2e-3: config.py's defaults
# Colour on a CPU (docs/reports/colour-recipes.md): the reference recipe in batches of 64 (twice the steps in the same
# time, the strongest lever measured at 32 px), with a power-function EMA, whose length follows the run's however
# long a time budget makes it, and a time budget's decay over its last fifth (FD lower or tied in each of three
# paired runs).
COLOUR_TRAIN = dataclasses.replace(REFERENCE_TRAIN, batch_size=64, ema_std=0.1, decay_from=0.8)
# A student's (`tinydiffusion distill`): a fine-tuning learning rate, no label dropout (the student learns the
# teacher's guided outputs for every class), one pass over the data. The preset-sized student of
# docs/reports/distillation.md was made with these (150 steps).
STUDENT_TRAIN = TrainConfig(lr=2e-4, warmup_steps=50, epochs=1, label_dropout=0.0)
# The learning rate of a new student's guidance embedding (distill.guidance_lr), the one part of it that starts at
# zero: at the rest's 2e-4 it barely moved, and students drew alike at every guidance scale
# (docs/reports/distillation.md).
STUDENT_GUIDANCE_LR = 1e-2


def sized_diffusion(image_size: int) -> DiffusionConfig:
    """The reference process for images of this size: above 32 pixels, the size its cosine schedule was measured
    at, every step's log-SNR lowered by 2 ln(size / 32) (Hoogeboom et al. 2023, sec. 3.1), so that the image
    averaged down to 32x32 is as noisy at each step as a 32-pixel image is. On colour emoji at 64 px this lowered
    FD at equal time (docs/reports/colour-recipes.md); grey images above 32 px get the same rule, unmeasured."""
    if image_size <= 32:
        return REFERENCE_DIFFUSION
    return dataclasses.replace(REFERENCE_DIFFUSION, logsnr_shift=round(-2 * math.log(image_size / 32), 3))


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
    # MNIST digits: the reference run's network and recipe. 20 epochs, because the folder of digits people
    # try first (a tenth of MNIST, like ../shared/data/mnist-10k) then gets 1,400 steps, about what the
    # reference run takes; on the full 60,000 digits, --epochs 5 is the reference run's length.
    "mnist": RunConfig(
        name="mnist", net=FASHION_MNIST_UNET, diffusion=REFERENCE_DIFFUSION,
        train=dataclasses.replace(REFERENCE_TRAIN, epochs=20), data=DataConfig(source="mnist"),
    ),
    # CIFAR-10, 32x32 RGB: DDPM's CIFAR-10 UNet (Ho et al. 2020, appendix B) at half its width, at full
    # resolution, with random flips. A GPU recipe: see docs/reports/datasets.md for its cost per epoch.
    "cifar10": RunConfig(
        name="cifar10",
        net=UNetConfig(image_size=32, in_channels=3, num_classes=10, base_channels=64,
                      channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_levels=(1,), stem_patch=1,
                      dropout=0.1),
        diffusion=REFERENCE_DIFFUSION,
        train=dataclasses.replace(REFERENCE_TRAIN, epochs=100, lr=1e-3, warmup_steps=1000, ema_decay=0.9995),
        data=DataConfig(source="cifar10", hflip=True),
    ),
    # Colour images of 32 and 64 pixels on a CPU (emoji, icons, sprites): `train --data FOLDER` picks these for
    # colour data, by size. Give them a time budget: --train.minutes 15.
    "colour-32": RunConfig(name="colour-32", net=sized_unet(32, 3), diffusion=REFERENCE_DIFFUSION,
                           train=COLOUR_TRAIN, data=DataConfig(image_size=32, channels=3)),
    "colour-64": RunConfig(name="colour-64", net=sized_unet(64, 3), diffusion=sized_diffusion(64),
                           train=COLOUR_TRAIN, data=DataConfig(image_size=64, channels=3)),
    # Tiny: trains in seconds on a CPU; for tests and for trying the command line.
    "smoke": RunConfig(
        name="smoke",
        net=UNetConfig(image_size=28, in_channels=1, num_classes=10, base_channels=8,
                      channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,), stem_patch=2),
        diffusion=DiffusionConfig(schedule="cosine", timesteps=100, objective="eps"),
        train=TrainConfig(epochs=1, batch_size=16, warmup_steps=5, ema_decay=0.9, log_every=5,
                          sample_num=4, sample_steps=5),
        data=DataConfig(),
    ),
}


def auto_config(image_size: int, channels: int = 1, latent: bool = False) -> RunConfig:
    """A sensible start for images of this size and channels: the reference UNet sized for them, with the colour
    recipe for colour images and the reference run's for grey ones. `latent`: the size and channels are an
    autoencoder's latents', which get latent_unet and the colour recipe."""
    if latent:
        return RunConfig(name="auto", net=latent_unet(image_size, channels), diffusion=REFERENCE_DIFFUSION,
                         train=COLOUR_TRAIN, data=DataConfig())
    train = COLOUR_TRAIN if channels == 3 else REFERENCE_TRAIN
    return RunConfig(name="auto", net=sized_unet(image_size, channels), diffusion=sized_diffusion(image_size),
                     train=train, data=DataConfig())


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}.")
    return copy.deepcopy(PRESETS[name])
