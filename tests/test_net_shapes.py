"""Networks follow the data: the UNet and the DiT that `run_configs.new_run` chooses for every preset and
`--net` build, and return the input's shape, on 1 or 3 channels at 28, 32 and 64 pixels, with and without classes.

Speed: the grid runs each network with its widths cut (and the DiT one block deep), keeping everything the data
decides (size, channels, classes, the UNet's stem, the DiT's patch) and every level, block and attention layer,
once per distinct network (many combinations give the same one); the networks at their real widths run once
each, at a batch of one, on the data their preset is for.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tinydiffusion.nets import NetConfig, UNetConfig, build_network
from tinydiffusion.nets.unet import SelfAttention
from tinydiffusion.presets import PRESETS
from tinydiffusion.run_configs import new_run

PRESET_NAMES = ["fashion-mnist", "mnist", "cifar10", "auto", "smoke"]
NETS = [None, "unet", "dit", "dit-b"]  # None: the preset's own network


def fitted(preset: str, net: str | None, channels: int, size: int, classes: int) -> NetConfig:
    config = new_run(preset, net, {}, ((channels, size, size), classes, 5000))
    config.validate()
    return config.net


def slim(net: NetConfig) -> NetConfig:
    if net.kind == "unet":
        return dataclasses.replace(net, base_channels=8)
    return dataclasses.replace(net, hidden_size=8 * net.num_heads, depth=1)


def output_shape(net: torch.nn.Module, config: NetConfig, batch: int) -> tuple[torch.Size, torch.Size]:
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size)
    t = torch.tensor([0.0, 999.5][:batch])  # samplers pass fractional timesteps
    y = torch.tensor([0, config.num_classes][:batch]) if config.num_classes else None  # a class, and "no class"
    with torch.inference_mode():
        return net(x, t, y).shape, x.shape


@pytest.mark.parametrize("classes", [0, 10])
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_network_fits_the_data(preset, net, channels, size, classes):
    config = fitted(preset, net, channels, size, classes)
    assert (config.in_channels, config.image_size, config.num_classes) == (channels, size, classes)
    assert config.kind == ("dit" if net in ("dit", "dit-b") else "unet")
    got, expected = slim_output_shape(slim(config))
    assert got == expected


_checked: dict[str, tuple[torch.Size, torch.Size]] = {}


def slim_output_shape(config: NetConfig) -> tuple[torch.Size, torch.Size]:
    key = repr(config)
    if key not in _checked:
        _checked[key] = output_shape(build_network(config), config, batch=2)
    return _checked[key]


def distinct_networks() -> list[NetConfig]:
    """Every preset's own network on the data it is for (auto and smoke: 28x28x1), and each --net on 28x28x1."""
    found: dict[str, NetConfig] = {}
    for preset, net in [(preset, None) for preset in PRESET_NAMES] + [("auto", net) for net in NETS[1:]]:
        channels, size = (3, 32) if preset == "cifar10" else (1, 28)
        config = fitted(preset, net, channels, size, 10)
        found.setdefault(repr(config), config)
    return list(found.values())


@pytest.mark.parametrize("config", distinct_networks(), ids=lambda c: f"{c.kind}-{c.in_channels}x{c.image_size}-"
                         f"w{c.base_channels if c.kind == 'unet' else c.hidden_size}")
def test_networks_at_full_width(config):
    got, expected = output_shape(build_network(config), config, batch=1)
    assert got == expected


@pytest.mark.parametrize("preset, shape", [("fashion-mnist", (1, 28)), ("mnist", (1, 28)), ("cifar10", (3, 32))])
def test_the_data_a_preset_is_for_leaves_its_network_alone(preset, shape):
    channels, size = shape
    assert fitted(preset, None, channels, size, 10) == PRESETS[preset].net


def test_patch_and_stem_follow_odd_sizes():
    """A size the preset's patch or stem does not divide gets the largest one that does."""
    assert fitted("fashion-mnist", None, 1, 27, 0).stem_patch == 1
    assert fitted("fashion-mnist", "dit", 1, 30, 0).patch_size == 2
    assert fitted("fashion-mnist", "dit-b", 1, 27, 0).patch_size == 1
    for net in (None, "dit"):
        config = slim(fitted("fashion-mnist", net, 1, 27, 0))
        got, expected = output_shape(build_network(config), config, batch=1)
        assert got == expected


@pytest.mark.parametrize("channels, heads", [(32, 1), (48, 1), (112, 2), (128, 4), (176, 4)])
def test_attention_heads_divide_the_width(channels, heads):
    assert SelfAttention(channels).num_heads == heads


def test_unet_runs_at_a_width_that_32_does_not_divide():
    """--net.base_channels 56 makes a 112-channel level: 2 heads of 56, not 3 that do not divide it."""
    config = UNetConfig(base_channels=56, channel_mults=(1, 2, 2), attention_levels=(1, 2), stem_patch=2)
    got, expected = output_shape(build_network(config), config, batch=1)
    assert got == expected
