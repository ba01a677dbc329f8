"""The UNet: shapes for 1/3 channels and 28/32 pixels, conditioning, and the builder."""

import pytest
import torch

from tinydiffusion.nets import UNetConfig, build_network, count_parameters
from tinydiffusion.presets import PRESETS


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("stem_patch", [1, 2])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_unet_output_shape(size, channels, stem_patch, num_classes):
    config = UNetConfig(image_size=size, in_channels=channels, num_classes=num_classes, base_channels=8,
                       channel_mults=(1, 2, 2), attention_levels=(2,), stem_patch=stem_patch)
    net = build_network(config)
    x = torch.randn(3, channels, size, size)
    y = torch.tensor([0, 5, num_classes]) if num_classes else None
    assert net(x, torch.tensor([0.0, 10.5, 999.0]), y).shape == x.shape


def test_unet_four_levels_on_28_pixels():
    """28 -> 14 -> 7 -> 4: odd sizes must round-trip through the decoder."""
    net = build_network(UNetConfig(base_channels=8, channel_mults=(1, 1, 2, 2), attention_levels=(3,)))
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.tensor([1.0, 2.0])).shape == x.shape


def perturbed(config):
    torch.manual_seed(0)
    net = build_network(config)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_unet_output_depends_on_t_and_class():
    net = perturbed(UNetConfig(base_channels=8, num_classes=10))
    x = torch.randn(2, 1, 28, 28)
    base = net(x, torch.tensor([100.0, 100.0]), torch.tensor([1, 1]))
    assert not torch.allclose(base, net(x, torch.tensor([700.0, 700.0]), torch.tensor([1, 1])))
    assert not torch.allclose(base, net(x, torch.tensor([100.0, 100.0]), torch.tensor([2, 2])))
    # y=None means the "no class" index
    torch.testing.assert_close(net(x, torch.tensor([100.0, 100.0]), None),
                               net(x, torch.tensor([100.0, 100.0]), torch.tensor([10, 10])))


def test_fresh_unet_outputs_zero():
    """The output conv starts at zero, so an untrained model predicts eps = 0, not noise."""
    net = build_network(UNetConfig(base_channels=8))
    assert net(torch.randn(2, 1, 28, 28), torch.tensor([1.0, 2.0])).abs().max().item() == 0.0


def test_preset_network_is_small():
    net = build_network(PRESETS["fashion-mnist"].net)
    assert count_parameters(net) < 3_000_000
