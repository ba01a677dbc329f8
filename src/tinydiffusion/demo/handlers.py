"""What each tab of the demo page does, as plain functions: settings, images and arrays in, Pillow images out.
Every input a visitor can send is checked here, and anything wrong is one sentence (UserError); nothing here writes
a file or reads a path a visitor typed. No Gradio: page.py wires these functions to its components, and the tests
call them directly.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from PIL import Image

from .. import editing
from ..autoencoders import decode, image_shape
from ..bounds import MAX_REQUEST_GUIDANCE, MAX_REQUEST_SAMPLING_STEPS, MAX_SEED
from ..data.images import NotAnImage, SkipImage, TooManyPixels, open_image
from ..data.pixels import to_model_space, to_pixels
from ..defaults import MASK_ALIASES
from ..errors import UserError
from ..pipeline import Model, generate, sampling_settings
from ..samplers import SAMPLERS, network_evaluations
from ..viz import grid_image
from ..words import count
from .limits import MAX_PIXELS

MAX_IMAGES = 64  # images in one grid
MAX_FRAMES = 16  # interpolation frames
SCALE = 4  # displayed pixels per model pixel: 28x28 images are shown at 112x112
EVERY_CLASS = "every class in turn"
LIVE_EVALUATIONS = 2  # a model that draws an image in at most this many network evaluations redraws live
NOT_AN_IMAGE = "the upload is not an image this page can read; choose a PNG, JPEG, WebP, GIF, BMP or TIFF file."


# --- checking what a visitor sends -------------------------------------------------------------------------

def number(value, what: str, low: float, high: float, whole: bool = True):
    """A form's number (a float, an int or text) -> a number in [low, high] (an int if `whole`), else one sentence."""
    wanted = f"a whole number from {low:,} to {high:,}" if whole else f"a number from {low:g} to {high:g}"
    try:
        found = float(value)
    except (TypeError, ValueError):
        raise UserError(f"the {what} must be {wanted}, not {value!r}.") from None
    if not (math.isfinite(found) and (not whole or found == int(found)) and low <= found <= high):
        raise UserError(f"the {what} must be {wanted}, not {value}.")
    return int(found) if whole else found


def sampler_choices(model: Model) -> list[str]:
    """Samplers the model samples with: a distilled student only its own, another model all but the students' own."""
    if model.config.distill.steps:
        return [model.config.distill.sampler]
    return [name for name, sampler in SAMPLERS.items() if not sampler.students_only]


def redraws_live(model: Model) -> bool:
    """Whether the Generate tab redraws as a setting changes, without a button press: a 1- or 2-step student, whose
    16 images take a fraction of a second on a CPU."""
    sampler, steps, guidance = sampling_settings(model)
    guided_twice = model.num_classes and guidance != 1.0 and not model.config.net.guidance_input
    return network_evaluations(sampler, steps) * (2 if guided_twice else 1) <= LIVE_EVALUATIONS


def sampling(model: Model, class_name: str | None, sampler: str, steps, guidance, seed) -> dict:
    """The shared sampling controls, checked (one sentence for anything out of range), as the keywords generate()
    and the editing functions take."""
    if sampler not in sampler_choices(model):
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(sampler_choices(model))}.")
    top = min(MAX_REQUEST_SAMPLING_STEPS, model.diffusion.num_timesteps)
    steps = number(steps, "number of steps", 1, top)
    guidance = number(guidance, "guidance scale", 0, MAX_REQUEST_GUIDANCE, whole=False) if model.num_classes else 1.0
    seed = number(seed, "seed", 0, MAX_SEED)
    if class_name in (None, "", EVERY_CLASS):
        classes = None
    elif not model.num_classes:
        raise UserError("this model is unconditional (it was trained without classes), so no class can be chosen.")
    else:
        classes = [model.class_index(str(class_name))]  # by name or index
    sampler, steps, guidance = sampling_settings(model, sampler, steps, guidance)
    return {"classes": classes, "sampler": sampler, "steps": steps, "guidance": guidance, "seed": seed}


def for_edit(settings: dict) -> dict:
    """With no class chosen an edit runs unconditionally, so guidance does not apply."""
    return {**settings, "guidance": settings["guidance"] if settings["classes"] else None}


# --- uploads -----------------------------------------------------------------------------------------------

def read_upload(payload: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An uploaded file's bytes -> a decoded Pillow image. A file that is not an image, is damaged, or has more
    than `max_pixels` pixels is one sentence, refused before it is decoded (data/images.open_image)."""
    if not payload:
        raise UserError("the upload is empty (0 bytes); choose an image file (PNG, JPEG, WebP, ...).")
    try:
        return open_image(payload, max_pixels)
    except TooManyPixels as err:
        if err.size is None:  # Pillow refused the header: past twice its own limit
            raise UserError(f"the upload has more pixels than Pillow allows; this page takes images of up to "
                            f"{err.limit:,} pixels.") from None
        width, height = err.size
        raise UserError(f"the image is {width:,}x{height:,} pixels ({width * height:,}), more than the "
                        f"{err.limit:,} this page takes; upload a smaller one.") from None
    except NotAnImage:
        raise UserError(NOT_AN_IMAGE) from None
    except SkipImage as err:
        raise UserError(f"the upload {err}; choose another image.") from None


def as_image(image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A Pillow image or a uint8 array [H, W] / [H, W, C] (C = 1, 3 or 4), checked for size -> a Pillow image."""
    if image is None:
        raise UserError("no image was given; upload one or choose a test image.")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise UserError(f"an image must be uint8 pixels of shape H x W or H x W x 1, 3 or 4, not {image.dtype} "
                            f"{'x'.join(map(str, image.shape))}.")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise UserError(f"an image was expected, not {type(image).__name__}.")
    if image.width * image.height > max_pixels:
        raise UserError(f"the image is {image.width:,}x{image.height:,} pixels, more than the {max_pixels:,} this "
                        "page takes; upload a smaller one.")
    return image


def drawn_mask(layers) -> np.ndarray | None:
    """The image editor's drawing layers (RGBA arrays) -> bool [H, W], True where anything was drawn."""
    arrays = [np.asarray(layer) for layer in layers or [] if layer is not None]
    masks = [array[..., 3] > 0 for array in arrays if array.ndim == 3 and array.shape[2] == 4]
    if not masks:
        return None
    if any(m.shape != masks[0].shape for m in masks):
        raise UserError("the drawing layers differ in size; draw the mask on the image itself.")
    return np.logical_or.reduce(masks)


def model_mask(model: Model, mask, image) -> torch.Tensor:
    """A bool mask [H, W] of the image as given -> bool [size, size] at the model's size (editing.fit_mask: a model
    pixel is regenerated if any part of it is masked)."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., -1] if mask.shape[2] in (2, 4) else mask[..., 0]
    if mask.ndim != 2:
        raise UserError(f"a mask must be one channel of H x W pixels, not {'x'.join(map(str, mask.shape))}.")
    width, height = image.size
    if mask.shape != (height, width):
        raise UserError(f"the mask is {mask.shape[1]}x{mask.shape[0]} pixels but the image is {width}x{height}; "
                        "draw the mask on the image itself, or give one of the image's size.")
    if not mask.any():
        raise UserError("the mask is empty; draw over the part of the image to regenerate, or pick a built-in mask.")
    picture = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")
    return editing.fit_mask(model, picture, image.size)[0]


# --- the tabs -----------------------------------------------------------------------------------------------

def grid(images: torch.Tensor, nrow: int | None = None) -> Image.Image:
    return grid_image(images, nrow=nrow, scale=SCALE)


def generate_grid(model: Model, num, class_name, sampler, steps, guidance, seed) -> tuple[Image.Image, str]:
    """Generate: a square grid of `num` images, and a line saying what it took."""
    num = number(num, "number of images", 1, MAX_IMAGES)
    settings = sampling(model, class_name, sampler, steps, guidance, seed)
    started = time.perf_counter()
    with torch.no_grad():
        images, _ = generate(model, num, **settings)
    seconds = time.perf_counter() - started
    return grid(images), (f"{count(num, 'image')}, {settings['sampler']}, {count(settings['steps'], 'step')}, "
                          f"guidance {settings['guidance']:g}, seed {settings['seed']}: {seconds:.2f} s.")


def reverse_process(model: Model, num, class_name, sampler, steps, guidance, seed) -> torch.Tensor:
    """The reverse process frame by frame, uint8 [steps, 2, num, C, H, W]: after each sampler step, x_t and the
    predicted clean image (a latent model's decoded), at the model's size (a page holds one per visitor)."""
    num = number(num, "number of images", 1, 16)
    settings = sampling(model, class_name, sampler, steps, guidance, seed)
    frames: list[torch.Tensor] = []

    def record(i, t, x_t, x0_pred):
        frames.append(torch.stack([to_pixels(decode(model.config.data, x.detach()).cpu()) for x in (x_t, x0_pred)]))

    with torch.no_grad():
        generate(model, num, batch_size=num, callback=record, **settings)
    return torch.stack(frames)


def frame_at(frames: torch.Tensor | None, index) -> Image.Image | None:
    """Frame `index` (1-based, as the page's slider counts steps) of reverse_process(): x_t over predicted x_0."""
    if frames is None or len(frames) == 0:
        return None
    frame = frames[number(index, "frame", 1, len(frames)) - 1]
    return grid(frame.flatten(0, 1), nrow=frame.shape[1])


def test_images(model: Model, data_dir: str | None = None) -> tuple[torch.Tensor, list[str], str]:
    """Images for the forward-process slider and the editing tabs, with a name each and a line saying where they
    come from: one test image per class from the model's data when it is on this machine (examples.py), else one
    per class drawn by the model itself."""
    from .examples import examples

    data_config = dataclasses.replace(model.config.data, **({"data_dir": data_dir} if data_dir else {}))
    found = examples(data_config, image_shape(model.config))  # a latent model's images: the recorded pixel shape
    if found is not None:
        images, classes = found
        names = [f"{name} (test image {i})" if name is not None else f"test image {i}"
                 for i, name in enumerate(classes)]
        return images, names, f"{count(len(images), 'image')} of the model's data ({model.config.data.source})"
    drawn = model.num_classes or 8
    with torch.no_grad():
        images, labels = generate(model, drawn, seed=0)
    names = [f"{model.class_names[c]} (drawn)" for c in labels.tolist()] if labels is not None else \
        [f"drawn image {i}" for i in range(drawn)]
    return images, names, (f"{count(drawn, 'image')} drawn by the model itself (seed 0), since its data "
                           f"({model.config.data.source}) is not on this machine")


def forward_process(model: Model, images: torch.Tensor, step, seed: int = 0) -> tuple[Image.Image, str]:
    """The forward process at one step: each image noised with q(x_t | x_0) at step `step` (0 = the clean image,
    T = the last step), always with the same noise, so moving the slider shows the noise growing."""
    T = model.diffusion.num_timesteps
    step = number(step, "step", 0, T)
    x0 = to_model_space(images)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    if step == 0:
        x_t, (alpha, sigma) = x0, (1.0, 0.0)
    else:
        t = model.diffusion.step_time(step - 1)
        x_t = model.diffusion.q_sample(x0, t.expand(len(x0)), noise)
        alpha, sigma = model.diffusion.alpha_sigma_at(float(t))
    snr = "infinite" if sigma == 0 else f"{alpha**2 / sigma**2:.3g}"
    return grid(to_pixels(x_t), nrow=len(images)), (f"step {step} of {T}: x_t = {alpha:.3f} x_0 + {sigma:.3f} noise "
                                                    f"(signal-to-noise ratio {snr}).")


def inpaint_tab(model: Model, image, mask, mask_name: str, num, class_name, sampler, steps, guidance, seed,
                max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Inpaint: regenerate the masked part of an image (a drawn mask, or a built-in one), keeping the rest. The
    result is one row: the image as the model sees it, the mask (grey), then `num` inpaintings."""
    image = as_image(image, max_pixels)
    num = number(num, "number of images", 1, 16)
    settings = sampling(model, class_name, sampler, steps, guidance, seed)
    mask_name = MASK_ALIASES.get(mask_name, mask_name)
    if mask_name not in ("drawn", *editing.MASKS):
        raise UserError(f"unknown mask {mask_name!r}; choose drawn or one of {', '.join(editing.MASKS)}.")
    pixels = editing.fit_image(model, image)  # uint8 [C, H, W] in the model's shape
    if mask_name == "drawn":
        if mask is None:
            raise UserError("no mask was drawn; draw over the part of the image to regenerate, or pick a built-in "
                            "mask.")
        region = model_mask(model, mask, image)
    else:
        region = editing.builtin_mask(mask_name, image_shape(model.config)[1], seed=settings["seed"])
    with torch.no_grad():
        results = editing.inpaint(model, pixels, region, num, **for_edit(settings))
    shown = torch.where(region, torch.full_like(pixels, 128), pixels)
    return grid(torch.cat([pixels[None], shown[None], results]), nrow=num + 2)


def img2img_tab(model: Model, image, strength, num, class_name, sampler, steps, guidance, seed,
                max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Image to image: noise the image to `strength` of the way (0 keeps it, 1 is pure noise) and sample back.
    One row: the image as the model sees it, then `num` results."""
    image = as_image(image, max_pixels)
    strength = number(strength, "strength", 0, 1, whole=False)
    num = number(num, "number of images", 1, 16)
    settings = sampling(model, class_name, sampler, steps, guidance, seed)
    pixels = editing.fit_image(model, image)  # uint8 [C, H, W] in the model's shape
    with torch.no_grad():
        results = editing.img2img(model, pixels, strength, num, **for_edit(settings))
    return grid(torch.cat([pixels[None], results]), nrow=num + 1)


def interpolate_tab(model: Model, class_a, class_b, seed_a, seed_b, frames, sampler, steps, guidance
                    ) -> tuple[Image.Image, torch.Tensor]:
    """Interpolation between two samples (two seeds, and two classes for a class-conditional model): the strip of
    all frames, and the frames themselves (uint8 [frames, C, H, W]) for the page's slider (frame_along)."""
    frames = number(frames, "number of frames", 2, MAX_FRAMES)
    settings = sampling(model, None, sampler, steps, guidance, 0)
    seeds = (number(seed_a, "first seed", 0, MAX_SEED), number(seed_b, "second seed", 0, MAX_SEED))
    classes = tuple(model.class_index(str(name)) for name in (class_a, class_b)) if model.num_classes else None
    with torch.no_grad():
        images = editing.interpolate(model, frames, seeds=seeds, classes=classes, sampler=settings["sampler"],
                                     steps=settings["steps"], guidance=settings["guidance"])
    return grid(images, nrow=frames), images


def frame_along(frames: torch.Tensor | None, position) -> Image.Image | None:
    """The interpolation frame nearest `position` along the path, from 0 (the first) to 1 (the last)."""
    if frames is None or len(frames) == 0:
        return None
    position = number(position, "position", 0, 1, whole=False)
    return grid(frames[round(position * (len(frames) - 1))][None])
