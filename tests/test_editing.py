"""Editing (inpaint, img2img, interpolate, DDIM inversion): exact where the method is exact, against an analytic
Gaussian denoiser where it is not, on the bundled model, and from the command line with hostile input."""

import numpy as np
import pytest
import torch
from conftest import cli
from PIL import Image
from torch import nn

from tinydiffusion.config import DiffusionConfig, RunConfig
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.editing import MASKS, builtin_mask, img2img, inpaint, interpolate
from tinydiffusion.editing.draw import start_draw
from tinydiffusion.editing.interpolate import invert
from tinydiffusion.errors import UserError
from tinydiffusion.nets.unet_config import UNetConfig
from tinydiffusion.pipeline import Model, generate, load_model

FAST = {"sampler": "ddim", "steps": 5}


class GaussianNet(nn.Module):
    """The exact denoiser of images x0 ~ N(mean, cov) over all their pixels, as a v-predicting network:
    E[x0 | x_t] = mean + alpha cov (alpha^2 cov + sigma^2 I)^-1 (x_t - alpha mean), in cov's eigenbasis."""

    def __init__(self, diffusion, mean: torch.Tensor, cov: torch.Tensor):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # where the model lives, as load_model's networks tell it
        self.alphas_cumprod, self.mean = diffusion.alphas_cumprod, mean.double()
        self.variances, self.basis = torch.linalg.eigh(cov.double())

    def forward(self, x, t, y=None, guidance=None):
        ab = self.alphas_cumprod[t.long()].view(-1, 1)
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        flat = x.flatten(1).double()
        shrink = alpha * self.variances / (alpha**2 * self.variances + sigma**2)
        x0 = self.mean + ((flat - alpha * self.mean) @ self.basis * shrink) @ self.basis.T
        return ((alpha * flat - x0) / sigma).float().view_as(x)  # v = (alpha x_t - x0) / sigma


SIDE = 4


def gaussian_model() -> tuple[Model, torch.Tensor]:
    """A 4x4 grey 'model' whose data are Gaussian with neighbouring pixels correlated, and that covariance."""
    where = torch.stack(torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij"), -1).view(-1, 2)
    cov = 0.3**2 * torch.exp(-torch.cdist(where.double(), where.double()) / 2.0)
    config = RunConfig(net=UNetConfig(image_size=SIDE, in_channels=1, num_classes=0),
                       diffusion=DiffusionConfig(objective="v"))
    diffusion = GaussianDiffusion(config.diffusion)
    return Model(GaussianNet(diffusion, torch.zeros(SIDE * SIDE), cov), diffusion, config, None), cov


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def shirt(model):
    return generate(model, 1, classes=[model.class_index("shirt")], seed=3, **FAST)[0][0]


# --- inpainting ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MASKS)
def test_inpainting_keeps_the_pixels_outside_the_mask_exactly(model, shirt, name):
    mask = builtin_mask(name, 28, seed=1)
    out = inpaint(model, shirt, mask, 2, classes=[6], resamplings=2, **FAST)
    assert out.shape == (2, 1, 28, 28) and out.dtype == torch.uint8
    assert torch.equal(out[:, :, ~mask], shirt[:, ~mask].expand(2, -1, -1))
    assert (out[:, :, mask] != shirt[:, mask]).float().mean() > 0.5  # the masked region is drawn anew


def gaussian_inpainting():
    """The Gaussian model, one of its draws as an image, the left half masked, and the exact conditional of the
    masked pixels given the rest: (model, image, mask, its mean, its std), over the masked pixels in order."""
    gaussian, cov = gaussian_model()
    x0 = torch.linalg.cholesky(cov) @ torch.randn(SIDE * SIDE, generator=torch.Generator().manual_seed(0),
                                                   dtype=torch.float64)
    image = ((x0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).view(1, SIDE, SIDE)
    given = image.double().flatten() / 127.5 - 1
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    mask[:, : SIDE // 2] = True
    m, k = mask.flatten(), ~mask.flatten()
    gain = cov[m][:, k] @ torch.linalg.inv(cov[k][:, k])  # the data's mean is 0
    return gaussian, image, mask, gain @ given[k], (cov[m][:, m] - gain @ cov[k][:, m]).diag().sqrt()


def conditional_errors(out: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
    """The largest errors, over the masked pixels, of the inpaintings' mean and std against the exact ones."""
    drawn = (out.double().flatten(1) / 127.5 - 1)[:, mask.flatten()]
    return (drawn.mean(0) - mean).abs().max().item(), (drawn.std(0) - std).abs().max().item()


def test_inpainting_an_exact_gaussian_draws_near_its_exact_conditional():
    """Correlated Gaussian pixels, the right half given: the left half's exact conditional is known in closed form.
    RePaint approximates it, and its resampling is what brings it near: at 100 DDPM steps with 10 resamplings
    (jumps of 5) the 300 draws' mean is within 0.12 of the exact conditional mean on every pixel (the given half
    moves it by up to 0.43; the prior std is 0.3, the conditional's 0.23-0.28) and their std within 0.04, where
    without resampling the mean is off by more than 0.15. (RePaint's own setting, 250 steps with jumps of 10,
    comes within 0.06; docs/editing.md.)"""
    gaussian, image, mask, mean, std = gaussian_inpainting()
    errors = {r: conditional_errors(inpaint(gaussian, image, mask, 300, sampler="ddpm", steps=100, jump_length=5,
                                            resamplings=r), mask, mean, std) for r in (1, 10)}
    assert errors[10][0] < 0.12 and errors[10][1] < 0.04, errors
    assert errors[1][0] > 0.15, errors


# --- image-to-image --------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m"])
def test_img2img_at_strength_0_is_the_input_and_at_1_a_sample_of_the_same_seed(model, shirt, sampler):
    settings = {"sampler": sampler, "steps": 5, "seed": 7, "classes": [3]}
    assert torch.equal(img2img(model, shirt, 0.0, 2, **settings), shirt.expand(2, -1, -1, -1))
    assert torch.equal(img2img(model, shirt, 1.0, 3, **settings), generate(model, 3, **settings)[0])


def test_img2img_keeps_more_of_the_image_the_lower_the_strength(model, shirt):
    distance = [(img2img(model, shirt, s, 4, classes=[3], sampler="ddim", steps=10).float() - shirt.float())
                .abs().mean() for s in (0.2, 0.5, 0.9)]
    assert distance[0] < distance[1] < distance[2]


# --- interpolation and inversion -------------------------------------------------------------------

@pytest.mark.parametrize("classes", [(0,), (0, 7)])
def test_the_ends_of_an_interpolation_are_the_ends_own_samples(model, classes):
    frames = interpolate(model, 4, seeds=(3, 9), classes=classes, **FAST)
    first = generate(model, 1, classes=[classes[0]], seed=3, **FAST)[0][0]
    last = generate(model, 1, classes=[classes[-1]], seed=9, **FAST)[0][0]
    assert torch.equal(frames[0], first) and torch.equal(frames[-1], last)
    assert not torch.equal(frames[1], first) and not torch.equal(frames[1], last)


def test_ddim_inversion_of_an_exact_denoiser_round_trips():
    """With the exact denoiser the only error left is the ODE steps': inverting each with the predictions at its
    start misses by 0.05 or more (of a data range of 2) at 50 steps; the default fixed-point refinements bring that
    under 0.002 (a fraction of one grey level)."""
    gaussian, _ = gaussian_model()
    images = torch.randn(8, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0)) * 0.3
    draw = start_draw(gaussian, 8, None, "ddim", 50, None, 0, {})
    error = [(draw.walk(invert(draw, images, refinements), draw.levels) - images).abs().max().item()
             for refinements in (0, 3)]
    assert error[0] > 0.05 and error[1] < 0.002, error


def test_ddim_inversion_of_the_bundled_model_round_trips(model, shirt):
    """Two images, inverted at 50 DDIM steps and drawn back (the ends of an interpolation between them): within
    half a grey level (of 255) on average, and within 2 on 99% of the pixels. One is a 5-step draw, off the
    model's own paths; the first guess alone misses it by 23 levels on average."""
    boot = generate(model, 1, classes=[9], seed=4, **FAST)[0][0]
    ends = interpolate(model, 2, images=(shirt, boot), classes=(6, 9))
    for image, back in zip((shirt, boot), ends, strict=True):
        error = (back.float() - image.float()).abs()
        assert error.mean() < 0.5 and error.quantile(0.99) <= 2, (error.mean(), error.max())


def test_a_distilled_student_edits_with_its_own_sampler_and_steps(shirt):
    from tinydiffusion.bundled import bundled

    student = load_model(bundled().student(), device="cpu")
    mask = builtin_mask("top", 28)
    out = inpaint(student, shirt, mask, 2, classes=[3])
    assert torch.equal(out[:, :, ~mask], shirt[:, ~mask].expand(2, -1, -1))
    assert torch.equal(img2img(student, shirt, 1.0, 2, classes=[3], seed=5),
                       generate(student, 2, classes=[3], seed=5)[0])
    with pytest.raises(UserError, match="inverting DDIM in fine steps .50., which a student distilled to 4 does not"):
        interpolate(student, 3, images=(shirt, shirt))


def test_the_1_and_2_step_students_edit_or_say_why_not(model, shirt):
    """The bundled 2-step student inpaints (the kept pixels exact) and redraws at strength 0.5; the 1-step student
    interpolates between noises and classes in one evaluation a frame, and for inpainting, image-to-image part of
    the way and real-image interpolation says in one sentence why it cannot."""
    from tinydiffusion import load_student

    one, two = load_student(1, device="cpu"), load_student(2, device="cpu")
    mask = builtin_mask("top", 28)
    filled = inpaint(two, shirt, mask, 2, classes=[3])
    assert torch.equal(filled[:, :, ~mask], shirt[:, ~mask].expand(2, -1, -1))
    redrawn = img2img(two, shirt, 0.5, 2, classes=[6], seed=1)
    assert not torch.equal(redrawn[0], shirt) and (redrawn.float() - shirt.float()).abs().mean() < 60
    calls = []
    one.net.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    frames = interpolate(one, 5, seeds=(0, 1), classes=(0, 9))
    assert frames.shape == (5, 1, 28, 28) and calls == [10]  # one evaluation: both classes in one batch
    assert torch.equal(img2img(one, shirt, 1.0, 2, classes=[3], seed=5), generate(one, 2, classes=[3], seed=5)[0])
    for call, words in [(lambda: inpaint(one, shirt, mask, classes=[3]), "inpainting in one step cannot fit"),
                        (lambda: img2img(one, shirt, 0.5, classes=[3]), "image-to-image in one step can only"),
                        (lambda: inpaint(model, shirt, mask, steps=1, sampler="ddim"), "take more --steps"),
                        (lambda: interpolate(one, 3, images=(shirt, shirt)), "student distilled to 1 does not")]:
        with pytest.raises(UserError, match=words) as refused:
            call()
        assert "its teacher" in str(refused.value) or "--steps" in str(refused.value)


# --- bad input to the functions --------------------------------------------------------------------

def test_the_editing_functions_refuse_bad_input_in_one_sentence(model, shirt):
    mask = builtin_mask("left", 28)
    for call, words in [
        (lambda: img2img(model, shirt, 1.5), "strength"),
        (lambda: img2img(model, shirt, float("nan")), "strength"),
        (lambda: img2img(model, shirt[:, :20], 0.5), "shaped"),
        (lambda: img2img(model, shirt.float(), 0.5), "uint8"),
        (lambda: inpaint(model, shirt, mask[:20]), "mask must be"),
        (lambda: inpaint(model, shirt, mask.int()), "mask must be"),
        (lambda: inpaint(model, shirt, mask, guidance=3), "add --class"),
        (lambda: inpaint(model, shirt, mask, classes=[12]), "out of range"),
        (lambda: interpolate(model, 1), "2 to 1,000 frames"),
        (lambda: interpolate(model, 3, images=(shirt, shirt), sampler="ddpm"), "DDIM"),
        (lambda: builtin_mask("circle", 28), "unknown mask"),
    ]:
        with pytest.raises(UserError, match=words):
            call()


# --- the command line ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pictures(shirt, tmp_path_factory):
    """A shirt as a 56x42 RGB photo (not square, not grey), a mask of its size, and hostile files."""
    folder = tmp_path_factory.mktemp("pictures")
    grey = Image.fromarray(shirt[0].numpy()).resize((56, 42), Image.BILINEAR)
    Image.merge("RGB", [grey, grey, grey.point(lambda v: v // 2)]).save(folder / "shirt.png")
    mask = np.zeros((42, 56), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(mask[:30]).save(folder / "small-mask.png")
    Image.fromarray(np.zeros((42, 56), np.uint8)).save(folder / "empty-mask.png")
    (folder / "notes.png").write_text("not an image")
    (folder / "cut.png").write_bytes((folder / "shirt.png").read_bytes()[:200])
    return folder


STEPS = ["--sampler", "ddim", "--steps", "4"]


def test_inpaint_writes_the_picture_at_its_own_size_with_the_rest_untouched(pictures, tmp_path, capsys):
    out = tmp_path / "inpainted.png"
    code, _, err = cli(capsys, "inpaint", "--image", pictures / "shirt.png", "--mask", pictures / "mask.png",
                       "--class", "dress", "--out", out, "--resamplings", "2", *STEPS)
    assert code == 0, err
    result = np.asarray(Image.open(out))
    given = np.asarray(Image.open(pictures / "shirt.png").convert("L"))  # the model is grey: converted as luma
    assert result.shape == (42, 56)
    assert np.array_equal(result[:, 20:], given[:, 20:]) and not np.array_equal(result[:, :20], given[:, :20])


@pytest.mark.parametrize("command", [["inpaint", "--mask", "centre"], ["img2img", "--strength", "0.6"]])
def test_num_variants_make_a_grid(pictures, tmp_path, capsys, command):
    out = tmp_path / "grid.png"
    code, _, err = cli(capsys, *command, "--image", pictures / "shirt.png", "--num", "4", "--out", out, *STEPS)
    assert code == 0, err
    assert Image.open(out).size == (2 + 2 * 58, 2 + 2 * 44)  # 2 x 2 variants of 56 x 42, 2 pixels apart


def test_img2img_toward_another_class(pictures, tmp_path, capsys):
    out = tmp_path / "dress.png"
    code, _, err = cli(capsys, "img2img", "--image", pictures / "shirt.png", "--strength", "0.7", "--class", "dress",
                       "--guidance", "3", "--out", out, *STEPS)
    assert code == 0, err
    assert Image.open(out).size == (56, 42) and np.asarray(Image.open(out)).std() > 10


def test_interpolate_between_noises_classes_and_pictures(pictures, tmp_path, capsys):
    out, gif = tmp_path / "strip.png", tmp_path / "strip.gif"
    code, _, err = cli(capsys, "interpolate", "--frames", "3", "--class", "t-shirt", "--class", "dress", "--out", out,
                       "--gif", gif, *STEPS)
    assert code == 0, err
    assert Image.open(out).size == (2 * (2 + 3 * 30), 2 * (2 + 30))  # one row of 3 frames, drawn at twice the size
    assert Image.open(gif).n_frames == 4  # there and back: 3 frames, then the middle one again
    code, _, err = cli(capsys, "interpolate", "--images", pictures / "shirt.png", pictures / "shirt.png",
                       "--frames", "2", "--steps", "5", "--out", out)
    assert code == 0, err


@pytest.mark.parametrize("args, words", [
    (["inpaint", "--image", "{p}/shirt.png", "--mask", "{p}/small-mask.png"], "mask is 56x30 but the image is 56x42"),
    (["inpaint", "--image", "{p}/shirt.png", "--mask", "{p}/empty-mask.png"], "the mask is empty"),
    (["inpaint", "--image", "{p}/shirt.png", "--mask", "circle"], "neither a file nor a built-in mask"),
    (["inpaint", "--image", "{p}/notes.png", "--mask", "left"], "is not an image"),
    (["inpaint", "--image", "{p}/cut.png", "--mask", "left"], "is damaged"),
    (["inpaint", "--image", "{p}/missing.png", "--mask", "left"], "missing.png does not exist; give a picture"),
    (["img2img", "--image", "{p}/shirt.png", "--strength", "1.5"], "must be a finite number between 0 and 1"),
    (["img2img", "--image", "{p}/shirt.png", "--strength", "nan"], "must be a finite number between 0 and 1"),
    (["img2img", "--image", "{p}/shirt.png", "--strength", "0.5", "--class", "hat"], "unknown class 'hat'"),
    (["img2img", "--image", "{p}/shirt.png", "--strength", "0.5", "--guidance", "2"], "add --class"),
    (["interpolate", "--class", "bag", "--class", "coat", "--class", "shirt"], "at most two classes"),
    (["interpolate", "--images", "{p}/shirt.png", "{p}/notes.png"], "is not an image"),
    (["interpolate", "--images", "{p}/shirt.png", "{p}/shirt.png", "--sampler", "ddpm"], "DDIM"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(pictures, tmp_path, capsys, args, words):
    out = tmp_path / "out.png"
    out.write_bytes(b"already here")
    code, stdout, err = cli(capsys, *[a.replace("{p}", str(pictures)) for a in args], "--out", out)
    assert code == 2 and words in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out.read_bytes() == b"already here" and stdout == ""


@pytest.mark.parametrize("command", [
    ["inpaint", "--image", "{mine}", "--mask", "left", "--out", "{mine}"],
    ["inpaint", "--image", "{p}/shirt.png", "--mask", "{mine}", "--out", "{mine}"],
    ["img2img", "--image", "{mine}", "--strength", "0.5", "--out", "{same}"],  # another spelling of the same path
    ["img2img", "--image", "{mine}", "--strength", "0.5", "--out", "{link}"],  # another name of the same file
    ["interpolate", "--images", "{p}/shirt.png", "{mine}", "--out", "{mine}"],
])
def test_the_result_never_overwrites_an_input(pictures, tmp_path, capsys, command):
    import os
    import shutil

    mine = tmp_path / "mine.png"
    shutil.copy(pictures / "shirt.png", mine)
    os.link(mine, tmp_path / "link.png")
    original = mine.read_bytes()
    names = {"{p}": str(pictures), "{mine}": str(mine), "{same}": f"{tmp_path}/../{tmp_path.name}/mine.png",
             "{link}": str(tmp_path / "link.png")}
    code, stdout, err = cli(capsys, *[names.get(a, a.replace("{p}", str(pictures))) for a in command])
    assert code == 2 and "which would be written over; give another --out" in err, err
    assert err.count("\n") == 1 and stdout == "" and mine.read_bytes() == original


def test_the_us_spelling_center_is_the_centre_mask(pictures, tmp_path, capsys):
    outs = {name: tmp_path / f"{name}.png" for name in ("centre", "center")}
    for name, out in outs.items():
        code, _, err = cli(capsys, "inpaint", "--image", pictures / "shirt.png", "--mask", name, "--resamplings", "1",
                           "--out", out, *STEPS)
        assert code == 0, err
    assert outs["centre"].read_bytes() == outs["center"].read_bytes()
