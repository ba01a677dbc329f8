"""Colour images: the network and recipe `train --data` picks by size and channels, and the colour throughput
benchmark's core on the real networks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env

from tinydiffusion.presets import FASHION_MNIST_UNET, PRESETS, config_for_data, working_patch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size, patch", [(28, 2), (32, 2), (64, 4), (96, 6), (48, 3), (27, 3), (5, 1)])
def test_the_stem_patch_keeps_the_unet_near_16_pixels(size, patch):
    assert working_patch(size) == patch and size % patch == 0


@pytest.mark.parametrize("size, preset", [(32, "colour-32"), (64, "colour-64")])
def test_colour_data_without_a_preset_gets_the_colour_preset(size, preset):
    config = config_for_data("auto", None, {}, ((3, size, size), 9, 6826))
    expected = PRESETS[preset]
    assert config.net == type(expected.net)(**{**vars(expected.net), "num_classes": 9})
    assert config.train.ema_std == expected.train.ema_std > 0  # the power-function EMA
    assert config.diffusion == expected.diffusion


def test_grey_data_keeps_the_reference_network_and_recipe():
    config = config_for_data("auto", None, {}, ((1, 28, 28), 10, 9003))
    assert config.net.stem_patch == FASHION_MNIST_UNET.stem_patch and config.net.in_channels == 1
    assert config.train.ema_std == 0 and config.train.ema_decay == 0.999


def test_a_folder_smaller_than_a_batch_trains_in_one_batch_of_its_size():
    config = config_for_data("auto", None, {}, ((3, 32, 32), 0, 100))
    assert config.train.batch_size == 100
    explicit = config_for_data("auto", None, {"train.batch_size": 32}, ((3, 32, 32), 0, 100))
    assert explicit.train.batch_size == 32


def test_the_colour_throughput_benchmark_measures_every_network(tmp_path):
    out = tmp_path / "colour.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "colour_throughput.py"), "--rounds", "1",
                             "--threads", "1", "--markdown", str(out)], env=cli_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "x" in line.split("|")[1]]
    assert [row.split("|")[1].split("(")[0].strip() for row in rows] == ["fashion-mnist", "colour-32", "colour-64"]
    reference = rows[0].split("|")
    assert reference[5].strip() == "1.00" and reference[7].strip() == "1.00"  # ratios against itself
    for row in rows[1:]:
        assert float(row.split("|")[3]) > 0.05 and float(row.split("|")[4]) > 0  # FLOPs and images/s measured
