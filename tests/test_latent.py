"""Latent diffusion through TAEF2 (issue 46): `train --autoencoder taef2` encodes the prepared images once (cached,
reused), trains on standardised latents with their statistics recorded, and sampling decodes to pixels; editing
and distillation work in latent space, and so does export, the decoder going with the denoiser."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_error, cli, run_cli
from PIL import Image


def colour_folder(folder: Path, size: int = 32, per_class: int = 8, grey: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(("red", "blue")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size) if grey else (size, size, 3), dtype=np.uint8)
            if not grey:
                pixels[..., 2 * index] = 220
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


def latent_train(data: Path, run: Path, *extra) -> list:
    return ["train", "--preset", "smoke", "--data", data, "--autoencoder", "taef2", "--run-dir", run,
            "--max-steps", "2", "--batch-size", "8", "--train.threads", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A two-step latent smoke run on 16 colour images of 32 px (latents 32x4x4), trained through the CLI."""
    root = tmp_path_factory.mktemp("latent")
    data = colour_folder(root / "colours")
    done = run_cli(latent_train(data, root / "run"))
    assert done.returncode == 0, done.stderr
    return root, data, done.stdout


def latents_entries() -> list[Path]:
    folder = Path(os.environ["TINYDIFFUSION_CACHE"]) / "latents"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def test_a_latent_run_records_its_autoencoder_and_the_latents_statistics(latent_run):
    root, _, out = latent_run
    assert "encoding 16 images with taef2" in out, out
    config = json.loads((root / "run" / "config.json").read_text())
    data, net = config["data"], config["net"]
    assert data["autoencoder"] == "taef2" and data["image_shape"] == [3, 32, 32]
    assert (net["in_channels"], net["image_size"]) == (32, 4)
    assert len(data["latent_mean"]) == len(data["latent_std"]) == 32
    assert all(math.isfinite(v) for v in data["latent_mean"] + data["latent_std"])
    assert all(s > 0 for s in data["latent_std"])


def test_the_latents_are_encoded_once_and_reused(latent_run):
    root, data, _ = latent_run
    (entry,) = latents_entries()
    before = (entry / "latents.npy").stat().st_mtime_ns
    again = run_cli(latent_train(data, root / "again"))
    assert again.returncode == 0, again.stderr
    assert "encoding" not in again.stdout, again.stdout
    assert latents_entries() == [entry] and (entry / "latents.npy").stat().st_mtime_ns == before
    recorded = [json.loads((root / run / "config.json").read_text())["data"]["latent_std"] for run in ("run", "again")]
    assert recorded[0] == recorded[1]


def test_sampling_a_latent_model_gives_pixels_of_the_datas_shape(latent_run, tmp_path):
    from tinydiffusion import generate, load_model

    root, _, _ = latent_run
    model = load_model(root / "run", "cpu")
    images, labels = generate(model, 3, sampler="ddim", steps=3)
    assert images.dtype.is_floating_point is False and tuple(images.shape) == (3, 3, 32, 32)
    assert labels is not None and len(labels) == 3
    done = run_cli(["sample", "--checkpoint", root / "run", "--num", "2", "--steps", "3", "--out", tmp_path / "s.png"])
    assert done.returncode == 0 and (tmp_path / "s.png").is_file(), done.stderr
    assert (root / "run" / "samples").is_dir()  # the training's grid went through generate(), so decoded


def test_the_cache_lists_and_clears_latents(tmp_path, private_cache, capsys):
    from tinydiffusion.config import DataConfig
    from tinydiffusion.data.latents import load_training_data

    data = colour_folder(tmp_path / "colours", per_class=2)
    dataset = load_training_data(DataConfig(source=str(data), autoencoder="taef2"), progress=False)
    assert tuple(dataset.images.shape) == (4, 32, 4, 4) and dataset.images.dtype.is_floating_point
    capsys.readouterr()
    code, listing, _ = cli(capsys, "cache")
    assert code == 0 and "latents (1 folder):" in listing and "4 images encoded by taef2 to 32x4x4" in listing, listing
    code, out, _ = cli(capsys, "cache", "--clear")
    assert code == 0 and "did not write" not in out, out
    assert not any((private_cache / "latents").glob("*-taef2-*")) if (private_cache / "latents").exists() else True


@pytest.mark.parametrize("flags, fragments", [
    (["--autoencoder", "vae"], ("data.autoencoder must be one of taef2", "'vae'")),
    (["--data.image_size", "20"], ("multiples of 8", "16 or 24")),
    (["--data.hflip", "true"], ("data.hflip does not apply to a latent run",)),
    (["--data.channels", "1"], ("encodes colour images",)),
])
def test_a_latent_run_refuses_what_it_cannot_encode(tmp_path, capsys, flags, fragments):
    data = colour_folder(tmp_path / "colours", per_class=1)
    code, _, err = cli(capsys, *latent_train(data, tmp_path / "run", *flags))
    assert_error(code, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_grey_data_is_refused_by_the_autoencoder(tmp_path, capsys):
    data = colour_folder(tmp_path / "grey", per_class=1, grey=True)
    code, _, err = cli(capsys, *latent_train(data, tmp_path / "run"))
    assert_error(code, err, "encodes colour images", "grey", "--data.channels 3")


@pytest.mark.parametrize("fmt", ["onnx", "diffusers"])
def test_a_latent_run_exports_with_no_extra_flag_and_samples_back_in_pixels(latent_run, tmp_path, fmt):
    """The decoder goes with the denoiser: beside the ONNX file (model.decoder.onnx), or as the folder's `vae`; each
    is read back by `sample` as RGB images of the data's size (the web page: tests/test_export_web.py)."""
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "diffusers")
    root, _, _ = latent_run
    out = tmp_path / ("model.onnx" if fmt == "onnx" else "model-diffusers")
    done = run_cli(["export", root / "run", "--format", fmt, "--out", out])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.decoder.onnx").is_file() if fmt == "onnx" else (out / "vae" / "config.json").is_file()
    runtime = ["--runtime", "onnxruntime"] if fmt == "onnx" else []
    done = run_cli(["sample", "--checkpoint", out, *runtime, "--num", "2", "--steps", "3", "--out", tmp_path / "s.png"])
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "s.png").mode == "RGB"


def test_a_latent_model_edits_pictures_keeping_the_pixels_outside_the_mask(latent_run):
    import torch

    from tinydiffusion import load_model
    from tinydiffusion.editing import fit_image, img2img, inpaint, interpolate

    root, data, _ = latent_run
    model = load_model(root / "run", "cpu")
    image = fit_image(model, Image.open(data / "red" / "0.png"))
    assert tuple(image.shape) == (3, 32, 32)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[:12, :12] = True  # touches the first 2 x 2 latent positions (8 x 8 pixels each)
    filled = inpaint(model, image, mask, 2, sampler="ddim", steps=4, resamplings=1)
    assert tuple(filled.shape) == (2, 3, 32, 32)
    assert torch.equal(filled[:, :, ~mask], image[:, ~mask].expand(2, -1, -1))
    assert not torch.equal(filled[0], image)  # the masked corner was drawn anew and decoded
    assert torch.equal(img2img(model, image, 0.0, sampler="ddim", steps=4)[0], image)
    variants = img2img(model, image, 0.5, 2, sampler="ddim", steps=4)
    assert tuple(variants.shape) == (2, 3, 32, 32) and variants.dtype == torch.uint8
    frames = interpolate(model, 3, sampler="ddim", steps=3)
    assert tuple(frames.shape) == (3, 3, 32, 32)
    pair = interpolate(model, 3, images=(image, image.flip(-1)), steps=3)
    assert tuple(pair.shape) == (3, 3, 32, 32)


@pytest.mark.parametrize("command", [
    ["inpaint", "--checkpoint", "{run}", "--image", "{image}", "--mask", "centre", "--steps", "4", "--out", "{out}"],
    ["img2img", "--checkpoint", "{run}", "--image", "{image}", "--strength", "0.5", "--steps", "4", "--out", "{out}"],
    ["visualize", "reverse", "--checkpoint", "{run}", "--num", "2", "--steps", "3", "--out", "{out}"],
])
def test_the_editing_commands_take_a_latent_model_with_no_extra_flag(latent_run, tmp_path, command):
    root, data, _ = latent_run
    names = {"run": root / "run", "image": data / "red" / "0.png", "out": tmp_path / "x.png"}
    done = run_cli([part.format(**names) for part in command])
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "x.png").mode == "RGB"


def test_a_latent_teacher_is_distilled_in_its_latent_space(latent_run, tmp_path):
    from tinydiffusion import generate, load_model

    root, _, _ = latent_run
    done = run_cli(["distill", "--teacher", root / "run", "--run-dir", tmp_path / "student", "--steps", "2",
                    "--max-steps", "1", "--batch-size", "8", "--train.threads", "1", "--no-progress"])
    assert done.returncode == 0, done.stderr
    assert "encoding" not in done.stdout  # the teacher's latents, from the cache
    teacher, student = (json.loads((run / "config.json").read_text())["data"] for run in (root / "run",
                                                                                         tmp_path / "student"))
    for key in ("autoencoder", "latent_mean", "latent_std", "image_shape"):
        assert student[key] == teacher[key], key
    images, _ = generate(load_model(tmp_path / "student", "cpu"), 2)
    assert tuple(images.shape) == (2, 3, 32, 32)


def test_a_latent_run_without_a_preset_gets_the_latent_recipe():
    from tinydiffusion.presets import COLOUR_TRAIN, auto_config
    from tinydiffusion.run_configs import new_run

    config = new_run("auto", None, {"data.autoencoder": "taef2"}, ((32, 8, 8), 9, 6826))
    net, pixels = config.net, auto_config(64, 3)
    assert (net.in_channels, net.image_size, net.stem_patch, net.base_channels) == (32, 8, 1, 64)
    assert config.train.batch_size == COLOUR_TRAIN.batch_size and config.train.ema_std == COLOUR_TRAIN.ema_std
    assert pixels.net.stem_patch == 2  # pixels keep the reference UNet's stem
    flagged = new_run("auto", None, {"data.autoencoder": "taef2", "net.base_channels": "32"}, ((32, 8, 8), 9, 6826))
    assert flagged.net.base_channels == 32


def test_autoencoder_none_gets_the_pixel_recipe_not_the_latent_one():
    from tinydiffusion.run_configs import new_run

    facts = ((3, 128, 128), 9, 6826)
    pixels = new_run("auto", None, {"data.autoencoder": "none"}, facts)
    assert pixels.data.autoencoder == "" and pixels.net == new_run("auto", None, {}, facts).net
    assert pixels.net.stem_patch == 2  # the pixel UNet's stem: the latent one at 128 px would attend over 64x64


def test_the_demos_editing_tabs_take_a_latent_model(latent_run):
    from tinydiffusion import load_model
    from tinydiffusion.demo import handlers

    root, data, _ = latent_run
    model = load_model(root / "run", "cpu")
    picture = Image.open(data / "red" / "0.png").convert("RGB")
    row = handlers.inpaint_tab(model, picture, None, "centre", 1, "red", "ddim", 4, 1.5, 0)
    assert row.size[1] >= 32 and row.mode == "RGB"  # the picture, the mask, one inpainting: pixels, not latents
    assert handlers.img2img_tab(model, picture, 0.5, 1, "red", "ddim", 4, 1.5, 0).mode == "RGB"


@pytest.mark.parametrize("preset, given, shape, start, expected", [
    ("auto", {}, (3, 64, 64), None, "taef2"),  # colour over 32 px, chosen for the data: latents
    ("auto", {}, (3, 40, 48), None, "taef2"),
    ("auto", {}, (3, 32, 32), None, ""),  # 32 px and under: pixels, as measured
    ("auto", {}, (1, 64, 64), None, ""),  # grey: TAEF2 encodes colour
    ("auto", {}, (3, 60, 60), None, ""),  # sides TAEF2 does not divide
    ("auto", {"data.autoencoder": "none"}, (3, 64, 64), None, ""),  # asked for pixels
    ("auto", {"data.autoencoder": ""}, (3, 64, 64), None, ""),
    ("colour-64", {}, (3, 64, 64), None, ""),  # a preset is the recipe it names
    ("auto", {}, (3, 64, 64), "start", ""),  # a fine-tune keeps its start's space
])
def test_colour_images_over_32_pixels_train_in_latents_by_default(preset, given, shape, start, expected):
    from tinydiffusion.config import DataConfig, RunConfig
    from tinydiffusion.run_configs import chosen_autoencoder

    started = RunConfig() if start else None
    assert chosen_autoencoder(preset, given, DataConfig(), started, shape) == expected
    assert chosen_autoencoder(preset, given, DataConfig(hflip=True), started, shape) == ""  # flips stay in pixels


def test_train_on_a_larger_colour_folder_diffuses_in_latents_unless_asked_for_pixels(tmp_path):
    data = colour_folder(tmp_path / "colours", size=40, per_class=4)
    flags = ["--max-steps", "1", "--batch-size", "4", "--train.threads", "1", "--no-progress"]
    done = run_cli(["train", "--data", data, "--run-dir", tmp_path / "latent", *flags])
    assert done.returncode == 0, done.stderr
    assert "training in taef2's latent space" in done.stdout, done.stdout
    config = json.loads((tmp_path / "latent" / "config.json").read_text())
    assert config["data"]["autoencoder"] == "taef2" and config["net"]["in_channels"] == 32
    pixels = run_cli(["train", "--data", data, "--run-dir", tmp_path / "pixels", "--autoencoder", "none", *flags])
    assert pixels.returncode == 0, pixels.stderr
    config = json.loads((tmp_path / "pixels" / "config.json").read_text())
    assert config["data"]["autoencoder"] == "" and config["net"]["in_channels"] == 3
    tuned = run_cli(["train", "--data", data, "--run-dir", tmp_path / "tuned", "--train.init", tmp_path / "pixels",
                     *flags])  # a pixel start stays in pixels, and says what a run from scratch would do
    assert tuned.returncode == 0, tuned.stderr
    assert "is a pixel-space model, so this fine-tune trains on the 40x40 pixels" in tuned.stdout, tuned.stdout
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["data"]["autoencoder"] == ""
    small = run_cli(["train", "--data", colour_folder(tmp_path / "small", size=32, per_class=4), "--run-dir",
                     tmp_path / "small-tuned", "--train.init", tmp_path / "pixels", *flags])
    assert small.returncode == 0, small.stderr
    assert "pixel-space model" not in small.stdout  # at 32 px a run from scratch is in pixels too: no note


def test_a_fine_tune_of_a_latent_run_diffuses_in_its_latents_standardised_as_they_were(latent_run, tmp_path):
    root, _, _ = latent_run
    start = json.loads((root / "run" / "config.json").read_text())["data"]
    other = colour_folder(tmp_path / "other", per_class=4)
    for path in other.rglob("*.png"):  # another style: the colours inverted
        Image.eval(Image.open(path), lambda v: 255 - v).save(path)
    flags = ["--data", other, "--max-steps", "1", "--batch-size", "4", "--train.threads", "1", "--no-progress"]
    done = run_cli(["train", *flags, "--train.init", root / "run", "--run-dir", tmp_path / "tuned"])
    assert done.returncode == 0, done.stderr
    assert "training in taef2's latent space, as its start" in done.stdout, done.stdout
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned["data"]["autoencoder"] == "taef2" and tuned["net"]["in_channels"] == 32
    assert tuned["data"]["latent_mean"] == start["latent_mean"] and tuned["data"]["latent_std"] == start["latent_std"]
    scratch = run_cli(["train", *flags, "--preset", "smoke", "--autoencoder", "taef2", "--run-dir", tmp_path / "new"])
    assert scratch.returncode == 0, scratch.stderr
    own = json.loads((tmp_path / "new" / "config.json").read_text())["data"]["latent_mean"]
    assert max(abs(a - b) for a, b in zip(own, start["latent_mean"], strict=True)) > 0.01  # its own differ
    pixels = run_cli(["train", *flags, "--train.init", root / "run", "--autoencoder", "none",
                      "--run-dir", tmp_path / "pixels"])
    assert_error(pixels.returncode, pixels.stderr, "taef2's latent space", "pixel space", "drop --autoencoder")
    assert not (tmp_path / "pixels").exists()
