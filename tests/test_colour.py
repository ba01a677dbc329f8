"""Colour images: the network and recipe `train --data` picks by size and channels, and the colour throughput
benchmark's core on the real networks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

from tinydiffusion.presets import FASHION_MNIST_UNET, PRESETS
from tinydiffusion.run_configs import new_run
from tinydiffusion.viz import class_columns

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size, preset", [(32, "colour-32"), (64, "colour-64")])
def test_colour_data_without_a_preset_gets_the_colour_preset(size, preset):
    config = new_run("auto", None, {}, ((3, size, size), 9, 6826))
    expected = PRESETS[preset]
    assert config.net == type(expected.net)(**{**vars(expected.net), "num_classes": 9})
    same_length = dataclasses.replace(config.train, epochs=expected.train.epochs)  # auto trains >= 2,000 steps
    assert same_length == expected.train and config.diffusion == expected.diffusion


def test_the_colour_presets_networks_and_recipes():
    small, large = PRESETS["colour-32"], PRESETS["colour-64"]
    assert (small.net.in_channels, small.net.stem_patch, small.net.channel_mults) == (3, 2, (1, 2, 2))
    assert small.train.batch_size == 64 and small.train.ema_std > 0  # the levers measured at 32 px
    assert small.train.decay_from == 0.8  # a time budget decays over its last fifth (measured at 32 and 64 px)
    assert (large.net.stem_patch, large.net.channel_mults) == (2, (1, 2, 2, 2))  # the lowest level stays 4 px
    assert large.train == small.train  # one colour recipe: batches of 64, a power-function EMA


@pytest.mark.parametrize("size, shift", [(28, 0.0), (32, 0.0), (48, -0.811), (64, -1.386)])
def test_images_above_32_pixels_get_a_schedule_shifted_by_their_size(size, shift):
    import torch

    from tinydiffusion.diffusion import GaussianDiffusion

    config = new_run("auto", None, {}, ((3, size, size), 9, 6826))
    assert config.diffusion.logsnr_shift == shift
    shifted, plain = (GaussianDiffusion(d).alphas_cumprod for d in (config.diffusion, PRESETS["colour-32"].diffusion))
    snr_ratio = (shifted / (1 - shifted)) / (plain / (1 - plain))  # (32 / size)^2 at every step, to 3 decimals
    assert torch.allclose(snr_ratio, torch.full_like(snr_ratio, min(1.0, (32 / size) ** 2)), rtol=1e-3)
    flag = new_run("auto", None, {"diffusion.logsnr_shift": 0.0}, ((3, size, size), 9, 6826))
    assert flag.diffusion.logsnr_shift == 0.0  # the flag overrides the size's default


def test_grey_data_keeps_the_reference_network_and_recipe():
    config = new_run("auto", None, {}, ((1, 28, 28), 10, 9003))
    assert config.net.stem_patch == FASHION_MNIST_UNET.stem_patch and config.net.in_channels == 1
    assert config.train.ema_std == 0 and config.train.ema_decay == 0.999
    assert config.train.decay_from == 0.5  # the later decay was measured on colour only


def test_a_folder_smaller_than_a_batch_trains_in_one_batch_of_its_size():
    assert new_run("auto", None, {}, ((3, 32, 32), 0, 10_000)).train.batch_size == 64  # the preset's
    config = new_run("auto", None, {}, ((3, 32, 32), 0, 40))
    assert config.train.batch_size == 40
    explicit = new_run("auto", None, {"train.batch_size": 16}, ((3, 32, 32), 0, 40))
    assert explicit.train.batch_size == 16


def test_class_columns_of_colour_images_have_a_white_header():
    import torch

    images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)  # black images of three classes, two rows
    picture = class_columns(images, ("a", "b", "c"), scale=1)
    assert picture.mode == "RGB" and picture.getpixel((picture.width - 1, 0)) == (255, 255, 255)


@pytest.mark.slow  # among the slowest (pyproject.toml: deselected by a plain `pytest`, run by CI)
def test_the_colour_throughput_benchmark_measures_every_network(tmp_path):
    out = tmp_path / "colour.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "colour_throughput.py"), "--rounds", "1",
                             "--threads", "1", "--batch", "8", "--markdown", str(out)], env=cli_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "x" in line.split("|")[1]]
    assert [row.split("|")[1].split("(")[0].strip() for row in rows] == ["fashion-mnist", "colour-32", "colour-64"]
    reference = rows[0].split("|")
    assert reference[5].strip() == "1.00" and reference[7].strip() == "1.00"  # ratios against itself
    for row in rows[1:]:
        assert float(row.split("|")[3]) > 0.05 and float(row.split("|")[4]) > 0  # FLOPs and images/s measured


@pytest.mark.parametrize("batch", ["0", "100000000"])
def test_the_colour_throughput_benchmark_refuses_an_absurd_batch_in_one_sentence(batch):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "colour_throughput.py"), "--batch", batch],
                            env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith("--batch between 1 and 1024")


def test_the_latent_route_benchmarks_autoencoder_learns_and_codes_to_uint8():
    """benchmarks/latent_route.py's core on tiny data: a 64x64x3 image codes to a 32x32x3 uint8 latent and back,
    each half within TAESD's size, and a few seconds of training reconstruct better than the untrained halves."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from latent_route import Decoder, Encoder, decode, encode, train_autoencoder

    ramp = torch.linspace(0, 255, 64)
    images = torch.stack([torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64),
                                       torch.full((64, 64), 40.0 * k)]) for k in range(6)]).to(torch.uint8)

    def error(enc, dec):
        latents = encode(enc, images)
        assert latents.dtype == torch.uint8 and latents.shape == (6, 3, 32, 32)
        decoded = decode(dec, latents)
        assert decoded.dtype == torch.uint8 and decoded.shape == images.shape
        return (decoded.float() - images.float()).abs().mean().item()

    torch.manual_seed(0)
    untrained = error(Encoder(16, 1).eval(), Decoder(16, 1).eval())
    enc, dec, record = train_autoencoder(images, seconds=4.0, width=16, blocks=1, batch=6, lr=3e-3,
                                         thumb_weight=0.1, seed=0)
    assert record["steps"] > 0 and record["parameters_per_half"] < 1_500_000
    assert error(enc, dec) < 0.8 * untrained
