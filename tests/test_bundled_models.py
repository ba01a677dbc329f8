"""The bundled models by name (bundled.py): `--model emoji` draws colour offline, `--fast` has its student, a colour
folder fine-tunes from it with `--train.init emoji`, and every wrong use is one sentence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_error, cli
from PIL import Image
from test_latent import colour_folder

from tinydiffusion import load_model, load_student
from tinydiffusion.bundled import MODELS, bundled
from tinydiffusion.checkpoint import CONFIG_FILE, latest_checkpoint

EMOJI_CLASSES = ("activities", "animals-nature", "flags", "food-drink", "objects", "people-body", "smileys-emotion",
                 "symbols", "travel-places")


def test_every_bundled_model_and_student_is_installed_with_its_config():
    for model in MODELS.values():
        for path in (model.weights, *(model.student(steps) for steps in model.students)):
            assert path.is_file() and path.with_suffix(".json").is_file(), path


def test_the_emoji_model_draws_the_colour_category_asked_offline(capsys, tmp_path):
    out = tmp_path / "e.png"
    code, _, err = cli(capsys, "sample", "--model", "emoji", "--class", "smileys-emotion", "--num", "4", "--steps",
                       "4", "--out", out, "--device", "cpu")
    assert code == 0, err
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[0] >= 32 and grid.std() > 10
    model = load_model("emoji", "cpu")
    assert model.class_names == EMOJI_CLASSES and model.config.net.in_channels == 3
    assert model.config.net.image_size == 32


def test_the_emoji_student_draws_in_four_evaluations(capsys, tmp_path):
    student = load_student(4, "cpu", model="emoji")
    calls = []
    student.net.register_forward_hook(lambda *_: calls.append(1))
    out = tmp_path / "fast.png"
    code, _, err = cli(capsys, "sample", "--model", "emoji", "--fast", "--num", "9", "--out", out, "--device", "cpu")
    assert code == 0, err
    assert Image.open(out).mode == "RGB"
    from tinydiffusion import generate

    images, labels = generate(student, 3, classes=["flags"])
    assert len(calls) == 4 and images.shape == (3, 3, 32, 32) and labels.tolist() == [2, 2, 2]


def test_the_default_model_is_fashion_mnist_by_name_too():
    assert bundled().name == "fashion-mnist"
    named, default = load_model("fashion-mnist", "cpu"), load_model(None, "cpu")
    assert named.source == default.source and named.class_names == default.class_names


def test_a_wrong_bundled_model_is_one_sentence(capsys, tmp_path):
    out = tmp_path / "x.png"
    code, _, err = cli(capsys, "sample", "--model", "cifar", "--out", out)
    assert code == 2 and "invalid choice: 'cifar'" in err and "Traceback" not in err
    code, _, err = cli(capsys, "sample", "--model", "emoji", "--checkpoint", tmp_path, "--out", out)
    assert_error(code, err, exact="give --checkpoint or --model, not both.")
    code, _, err = cli(capsys, "sample", "--model", "emoji", "--fast", "--steps", "2", "--out", out)
    assert_error(code, err, "emoji model's bundled students of 4 steps, not 2")
    code, _, err = cli(capsys, "evaluate", "--model", "emoji", "--num", "10")
    assert_error(code, err, "--data FOLDER")
    with pytest.raises(Exception, match="no bundled model named 'cifar'"):
        bundled("cifar")
    with pytest.raises(Exception, match="one of 4, not 1"):
        load_student(1, model="emoji")
    assert not out.exists()


def test_a_colour_folder_fine_tunes_from_the_emoji_model(capsys, tmp_path):
    """`--train.init emoji`: the emoji model's network and process at the folder's size, a fresh class table for
    other classes, the rest of the weights kept; the run records where it started."""
    folder = colour_folder(tmp_path / "shapes", size=16, per_class=4)
    run = tmp_path / "run"
    code, out, err = cli(capsys, "train", "--data", folder, "--train.init", "emoji", "--run-dir", run, "--max-steps",
                         "1", "--batch-size", "8", "--train.threads", "1", "--train.lr", "1e-12", "--no-progress",
                         "--train.sample_every_epoch", "false")
    assert code == 0, err
    assert "fresh class table" in out
    config = json.loads((run / CONFIG_FILE).read_text())
    emoji = load_model("emoji", "cpu")
    assert config["train"]["init"] == "emoji" and config["net"]["image_size"] == 16
    assert config["net"]["num_classes"] == 2 and config["diffusion"]["objective"] == emoji.config.diffusion.objective
    assert config["net"]["base_channels"] == emoji.config.net.base_channels
    tuned = load_model(latest_checkpoint(run), "cpu").net.state_dict()
    start = emoji.net.state_dict()
    kept = [k for k in start if not k.endswith("class_embedding.weight")]
    assert kept and all(torch.allclose(tuned[k], start[k], atol=1e-6) for k in kept)  # a learning rate of 1e-12


def test_a_folder_named_like_a_bundled_model_is_reached_as_a_path(capsys, tmp_path, monkeypatch):
    """`--train.init emoji` is the bundled model even beside a folder named emoji; `./emoji` is the folder."""
    monkeypatch.chdir(tmp_path)
    colour_folder(tmp_path / "emoji", size=16, per_class=2)
    code, _, err = cli(capsys, "train", "--data", "emoji", "--train.init", "./emoji", "--run-dir", tmp_path / "r",
                       "--max-steps", "1", "--no-progress")
    assert_error(code, err, "--train.init", "emoji")
    assert not (tmp_path / "r").exists()
    code, _, err = cli(capsys, "train", "--data", "emoji", "--train.init", "emoji", "--run-dir", tmp_path / "r",
                       "--max-steps", "1", "--batch-size", "4", "--train.threads", "1", "--no-progress",
                       "--train.sample_every_epoch", "false")
    assert code == 0, err
    assert json.loads((tmp_path / "r" / CONFIG_FILE).read_text())["train"]["init"] == "emoji"


def test_the_demo_draws_colour_emoji_of_the_category_asked():
    from tinydiffusion.demo import handlers

    model = load_model("emoji", "cpu")
    image, status = handlers.generate_grid(model, 4, class_name="flags", sampler="ddim", steps=3, guidance=1.5, seed=0)
    pixels = np.asarray(image)
    assert image.mode == "RGB" and status.startswith("4 images, ddim, 3 steps")
    assert np.abs(pixels[..., 0].astype(int) - pixels[..., 2]).mean() > 1  # colour, not grey in three channels


def test_the_emoji_students_refusal_names_its_bundled_teacher():
    """Asked for other steps, the emoji student points at the emoji model as a user would load it."""
    from tinydiffusion import generate
    from tinydiffusion.errors import UserError

    with pytest.raises(UserError) as refusal:
        generate(load_student(4, "cpu", model="emoji"), 1, steps=3)
    assert "`tinydiffusion sample --model emoji`, or load_model('emoji')" in str(refusal.value)
