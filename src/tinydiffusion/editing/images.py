"""Pictures in and out of an edit: any picture fitted to the model's shape, masks, and the result at the
picture's own size.

A picture is converted to the model's channels as training data is (data/images.py: 16-bit scaled, transparency
on white, grey as luma) and resized to the model's square size, stretched if it is not square. The result is
resized back to the picture's own size, which undoes the stretch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..autoencoders import image_shape
from ..data.images import MAX_FILE_BYTES, Shape, SkipImage, open_image, to_mode
from ..defaults import BUILTIN_MASKS as MASKS  # True (white in a mask file) = regenerate
from ..errors import UserError
from ..files import read_file
from ..pipeline import Model


def builtin_mask(name: str, size: int, seed: int = 0) -> torch.Tensor:
    """A built-in mask, bool [size, size]: the left half, the top half, the centre square (half the side), or
    a few random thick strokes (seeded)."""
    if name not in MASKS:
        raise UserError(f"unknown mask {name!r}; give an image file or one of {', '.join(MASKS)}.")
    mask = torch.zeros(size, size, dtype=torch.bool)
    half, quarter = size // 2, size // 4
    if name == "left":
        mask[:, :half] = True
    elif name == "top":
        mask[:half] = True
    elif name == "centre":
        mask[quarter:quarter + half, quarter:quarter + half] = True
    else:
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        rng = np.random.default_rng(seed)
        for _ in range(3):
            points = [tuple(p) for p in rng.uniform(0, size, (4, 2))]
            draw.line(points, fill=255, width=max(1, size // 7), joint="curve")
        mask = torch.from_numpy(np.asarray(canvas) > 0)
    return mask


def read_picture(path: str | Path, what: str = "--image") -> Image.Image:
    """A picture file, decoded as training data is (no EPS, a pixel limit, only a regular file of at most
    MAX_FILE_BYTES); one sentence if it is not one."""
    payload = read_file(Path(path), MAX_FILE_BYTES, f"{what} {path}", "give a picture file")
    try:
        return open_image(payload)
    except SkipImage as err:
        raise UserError(f"{what} {path} {err}.") from None


def picture_pixels(model: Model, picture: Image.Image) -> torch.Tensor:
    """A picture in the model's channels at its own size: uint8 [C, H, W]."""
    channels, size, _ = image_shape(model.config)
    try:
        image = to_mode(picture, Shape(size, channels))
    except SkipImage as err:
        raise UserError(f"the image {err}.") from None
    except ValueError as err:
        raise UserError(f"the image has colour mode {picture.mode}, which cannot be converted ({err}).") from None
    return _tensor(image)


def fit_image(model: Model, picture: Image.Image) -> torch.Tensor:
    """Any picture -> uint8 [C, H, W] in the model's shape: converted to its channels, resized to its size."""
    size = image_shape(model.config)[1]
    return to_picture_size(picture_pixels(model, picture)[None], (size, size))[0]


def _tensor(image: Image.Image) -> torch.Tensor:
    array = np.array(image, dtype=np.uint8)  # a copy torch may own
    return torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1).contiguous()


def scale_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A bool mask at the model's size -> bool [H, W] at a picture's (W, H) size, each pixel as its nearest."""
    picture = Image.fromarray(mask.numpy().astype(np.uint8) * 255).resize(size, Image.NEAREST)
    return torch.from_numpy(np.asarray(picture) > 127)


def fit_mask(model: Model, picture: Image.Image, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask picture (white = regenerate) of the image's size -> (bool [H, W] at the model's size, bool at the
    picture's own size). A model pixel is regenerated if any part of it is masked."""
    if picture.size != image_size:
        raise UserError(f"the mask is {picture.size[0]}x{picture.size[1]} but the image is "
                        f"{image_size[0]}x{image_size[1]}; draw the mask at the image's size.")
    grey = np.asarray(to_mode(picture, Shape(1, 1, (0, 0, 0))), dtype=np.uint8)  # transparent = keep
    full = grey > 127
    size = image_shape(model.config)[1]
    coverage = Image.fromarray(full.astype(np.uint8) * 255).resize((size, size), Image.BOX)
    return torch.from_numpy(np.asarray(coverage) > 0), torch.from_numpy(full)


def to_picture_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [N, C, h, w] at the model's size -> uint8 [N, C, H, W] at a picture's own (W, H) size (Lanczos)."""
    if (images.shape[3], images.shape[2]) == size:
        return images
    out = []
    for image in images:
        array = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        out.append(_tensor(picture.resize(size, Image.LANCZOS)))
    return torch.stack(out)
