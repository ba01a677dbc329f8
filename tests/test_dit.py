"""The Diffusion Transformer: shapes, the adaLN-Zero start, that the conditioning is wired, and gradients."""

from __future__ import annotations

import pytest
import torch

from tinydiffusion.nets import DiTConfig, build_network
from tinydiffusion.nets.dit import DiT, sincos_pos_embed_2d


def small_config(**overrides) -> DiTConfig:
    fields = dict(image_size=28, in_channels=1, num_classes=10, patch_size=4,
                  hidden_size=32, depth=2, num_heads=2, mlp_ratio=2.0)
    fields.update(overrides)
    return DiTConfig(**fields)


def inputs(config: DiTConfig, batch: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=gen)
    t = torch.rand(batch, generator=gen) * 1000  # fractional timesteps
    y = torch.randint(0, config.num_classes + 1, (batch,), generator=gen) if config.num_classes else None
    return x, t, y


def perturb(net: torch.nn.Module, seed: int = 0, std: float = 0.05) -> None:
    """Move every parameter off its init, so no zero-initialised gate hides a broken path."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("image_size", [28, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("patch_size", [2, 4])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_output_shape_matches_input(image_size, in_channels, patch_size, num_classes):
    config = small_config(image_size=image_size, in_channels=in_channels, patch_size=patch_size,
                          num_classes=num_classes)
    net = build_network(config)
    assert isinstance(net, DiT)
    perturb(net)
    x, t, y = inputs(config)
    out = net(x, t, y)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    if num_classes:
        assert net(x, t).shape == x.shape  # y=None: the "no class" token


def test_fresh_dit_outputs_exact_zeros():
    config = small_config()
    net = DiT(config)
    x, t, y = inputs(config)
    assert torch.equal(net(x, t, y), torch.zeros_like(x))
    assert torch.equal(net(x, t), torch.zeros_like(x))


def test_perturbed_output_depends_on_x_t_and_y():
    config = small_config()
    net = DiT(config)
    perturb(net)
    x, t, y = inputs(config)
    out = net(x, t, y)
    assert out.abs().mean() > 1e-3
    assert not torch.allclose(out, net(x, t + 100.0, y), atol=1e-5)
    assert not torch.allclose(out, net(x, t, (y + 1) % config.num_classes), atol=1e-5)
    assert not torch.allclose(out, net(x, t), atol=1e-5)  # y=None differs from real classes
    assert not torch.allclose(out, net(x.flip(-1), t, y), atol=1e-5)


def test_training_steps_escape_the_zero_init():
    """A few AdamW steps from the real init (no perturbation) make the output non-zero and conditioned."""
    torch.manual_seed(0)
    config = small_config()
    net = DiT(config)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x, t, y = inputs(config, batch=8)
    target = torch.randn_like(x)
    # adaLN-Zero unlocks in stages: the final linear, then the gates and final modulation, then the rest.
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x, t, y), target).backward()
        opt.step()
    unchanged = [name for name, p in net.named_parameters() if torch.equal(p, before[name])]
    assert unchanged == []
    with torch.no_grad():
        out = net(x, t, y)
        assert out.abs().mean() > 0
        assert not torch.allclose(out, net(x, t.flip(0), y))
        assert not torch.allclose(out, net(x, t, y.flip(0)))


@pytest.mark.parametrize("learned_pos_embed", [False, True])
def test_every_parameter_gets_a_gradient(learned_pos_embed):
    # DistributedDataParallel fails on parameters that get no gradient, so none may be unused.
    config = small_config(learned_pos_embed=learned_pos_embed)
    net = DiT(config)
    perturb(net)
    x, t, _ = inputs(config, batch=4)
    y = torch.tensor([0, 3, 9, config.num_classes])  # include the "no class" row
    net(x, t, y).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    names = {name for name, _ in net.named_parameters()}
    assert ("pos_embed" in names) == learned_pos_embed


def test_sincos_positions_all_differ():
    grid, dim = 7, 64
    emb = sincos_pos_embed_2d(grid, dim)
    assert emb.shape == (grid * grid, dim)
    distances = torch.cdist(emb, emb)
    off_diagonal = distances[~torch.eye(grid * grid, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3
    # Raster order: position 1 is row 0, column 1, so it shares its row features with position 0.
    assert torch.equal(emb[0, : dim // 2], emb[1, : dim // 2])
    assert not torch.equal(emb[0, dim // 2 :], emb[1, dim // 2 :])


def test_fixed_pos_embed_is_not_saved():
    net = DiT(small_config())
    assert "pos_embed" not in net.state_dict()
    assert "pos_embed" in DiT(small_config(learned_pos_embed=True)).state_dict()


def test_unpatchify_returns_each_patch_to_its_place():
    """With the blocks still at identity, output patch (r, c) may depend only on input patch (r, c)."""
    config = small_config(in_channels=3, patch_size=4, image_size=16)
    net = DiT(config)
    perturb(net.final)
    p = config.patch_size
    x, t, y = inputs(config, batch=1)
    x.requires_grad_(True)
    row, col = 1, 2  # off the diagonal, so a swapped row/column order fails too
    net(x, t, y)[:, :, row * p : (row + 1) * p, col * p : (col + 1) * p].sum().backward()
    influence = x.grad.abs().sum(dim=(0, 1))  # [H, W]
    inside = torch.zeros_like(influence, dtype=torch.bool)
    inside[row * p : (row + 1) * p, col * p : (col + 1) * p] = True
    assert influence[inside].min() > 0
    assert influence[~inside].max() == 0


def test_both_names_of_the_small_transformer_take_the_transformer_recipe():
    from tinydiffusion.presets import get_preset
    from tinydiffusion.run_configs import preset_with_network

    recipe = get_preset("fashion-mnist-dit")
    for name in ("dit", "dit-s"):
        assert preset_with_network("fashion-mnist", name) == recipe, name
    assert preset_with_network("fashion-mnist", "dit-b").train == get_preset("fashion-mnist").train
    assert preset_with_network("fashion-mnist", None) == get_preset("fashion-mnist")
    assert preset_with_network("smoke", "dit").net.kind == "dit"  # other presets only swap the network
