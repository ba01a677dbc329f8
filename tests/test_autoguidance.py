"""Autoguidance (Karras et al. 2024): a model guided by a weaker version of itself, in generate() and on the command
line (--guide), and the guides it refuses."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_error, cli, smoke_config

from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.errors import UserError
from tinydiffusion.pipeline import generate, load_model, load_student
from tinydiffusion.samplers.denoiser import Denoiser
from tinydiffusion.training import train


class Constant(torch.nn.Module):
    """A network whose output is a fixed value for every input."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x, t, y=None):
        return torch.full_like(x, self.value)


def test_the_guided_prediction_is_the_guide_s_pushed_towards_the_model_s():
    diffusion = GaussianDiffusion(smoke_config(".").diffusion)
    y = torch.tensor([1, 2])
    guide = Denoiser(Constant(0.5), diffusion, y)
    x = torch.randn(2, 1, 4, 4)
    strong = Denoiser(Constant(2.0), diffusion, y)(x, 10, 0.6, 0.8)
    weak = guide(x, 10, 0.6, 0.8)
    for scale in (0.0, 1.0, 2.5):
        mixed = Denoiser(Constant(2.0), diffusion, y, guidance=scale, null_class=10, guide=guide)(x, 10, 0.6, 0.8)
        for m, s, w in zip(mixed, strong, weak, strict=True):
            assert torch.allclose(m, w + scale * (s - w))


@pytest.fixture(scope="module")
def early_run(tiny_data_dir, tmp_path_factory):
    """A weaker version of the trained run: the same network after one step."""
    run = tmp_path_factory.mktemp("early") / "run"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 1}), run, progress=False)
    return run


def test_a_model_guided_by_itself_is_its_plain_conditional_self(trained_run):
    model = load_model(trained_run, "cpu")
    plain, _ = generate(model, 4, classes=[3], guidance=1.0, steps=5)
    guided, _ = generate(model, 4, classes=[3], guidance=3.0, steps=5, guide=model)
    assert torch.equal(plain, guided)


def test_a_weaker_guide_changes_the_images_and_the_scale_matters(trained_run, early_run):
    model, guide = load_model(trained_run, "cpu"), load_model(early_run, "cpu")
    at_one, _ = generate(model, 4, classes=[3], guidance=1.0, steps=5, guide=guide)
    plain, _ = generate(model, 4, classes=[3], guidance=1.0, steps=5)
    assert torch.equal(at_one, plain)  # scale 1: the model alone
    guided, _ = generate(model, 4, classes=[3], guidance=2.0, steps=5, guide=guide)
    cfg, _ = generate(model, 4, classes=[3], guidance=2.0, steps=5)
    assert not torch.equal(guided, plain) and not torch.equal(guided, cfg)


def test_guides_that_do_not_fit_are_one_sentence(trained_run, tiny_data_dir, tmp_path):
    model = load_model(trained_run, "cpu")
    other = tmp_path / "other"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 1, "diffusion.timesteps": 50}), other, progress=False)
    with pytest.raises(UserError, match="noise process"):
        generate(model, 2, guidance=2.0, guide=load_model(other, "cpu"))
    unconditional = tmp_path / "unconditional"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 1, "net.num_classes": 0}), unconditional,
          progress=False)
    with pytest.raises(UserError, match="same shape and classes"):
        generate(model, 2, guidance=2.0, guide=load_model(unconditional, "cpu"))
    with pytest.raises(UserError, match="student folds its guidance in"):
        generate(load_student(4, "cpu"), 2, guide=load_student(4, "cpu"))


def test_sample_takes_a_guide_and_names_a_missing_one(capsys, trained_run, early_run, tmp_path):
    code, out, err = cli(capsys, "sample", "--checkpoint", trained_run, "--guide", early_run, "--guidance", "2",
                         "--num", "2", "--steps", "3", "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    code, _, err = cli(capsys, "sample", "--checkpoint", trained_run, "--guide", tmp_path / "nowhere",
                       "--out", tmp_path / "t.png")
    assert_error(code, err, "--guide", "nowhere", "does not exist")
    assert not (tmp_path / "t.png").exists()
