"""One image, decoded and shaped: any Pillow mode to 1 or 3 channels, then resized and centre-cropped.

Shaping rules, the same for files and arrays:
- 16-bit greyscale is scaled to 8 bits (v / 257, rounded); palette images take their palette's colours.
- Transparency is composited onto a background colour (`alpha_background`, white by default), since a
  model sees no alpha; CMYK and other colour spaces are converted to RGB by Pillow.
- 1 channel is Pillow's ITU-R 601-2 luma; 3 channels replicate grey.
- The shorter side is resized to `size` with Lanczos filtering (antialiased, so downsampling does not
  alias), then the longer side is centre-cropped. An image smaller than `size` is skipped, not blown up.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow reads EPS by running Ghostscript, an interpreter of a programming language, when it is installed:
# a folder of someone else's images must never run a program. Every other format Pillow reads itself.
EXTERNAL_PROGRAM_FORMATS = {"EPS"}
MAX_FILE_BYTES = 256 << 20  # no image a small model trains on is near this; a larger file is not read


def readable_formats() -> list[str]:
    """The Pillow formats images are decoded as: all that Pillow decodes in-process."""
    Image.init()
    return [f for f in Image.OPEN if f not in EXTERNAL_PROGRAM_FORMATS]


class SkipImage(Exception):
    """This image cannot be used; the message says why (it is counted, not fatal)."""


class NotAnImage(SkipImage):
    """No format Pillow decodes in-process recognises the bytes."""


class TooManyPixels(SkipImage):
    """More pixels than the limit, known from the header: not a pixel was decoded. `size` is (width, height), or
    None where Pillow refused the header itself (past twice its own limit)."""

    def __init__(self, limit: int, size: tuple[int, int] | None = None):
        whose = "Pillow's limit" if limit == Image.MAX_IMAGE_PIXELS else "the limit"
        super().__init__(f"has more pixels than {whose} of {limit:,} (a decompression bomb?)")
        self.limit, self.size = limit, size


@dataclass(frozen=True)
class Shape:
    size: int  # the side of the square output
    channels: int  # 1 or 3
    alpha_background: tuple[int, int, int] = (255, 255, 255)


def to_mode(image: Image.Image, shape: Shape) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit int) greyscale
        array = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode.startswith("I;16") or array.max() > 255 else 255
        image = Image.fromarray(np.rint(np.clip(array, 0, top) * (255 / top)).astype(np.uint8), mode="L")
    elif image.mode == "F":
        raise SkipImage("holds floating-point pixels, whose range is unknown")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (*shape.alpha_background, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if shape.channels == 1 else "RGB")


def shape_image(image: Image.Image, shape: Shape) -> np.ndarray:
    """A Pillow image -> uint8 [size, size, channels]."""
    try:
        image = to_mode(image, shape)
    except ValueError as err:  # a mode Pillow reads but cannot convert (a LAB TIFF to grey, say)
        raise SkipImage(f"has colour mode {image.mode}, which cannot be converted ({err})") from None
    width, height = image.size
    if min(width, height) < shape.size:
        raise SkipImage(f"is {width}x{height}, smaller than the requested {shape.size} pixels")
    if (width, height) != (shape.size, shape.size):
        scale = shape.size / min(width, height)
        new = (max(shape.size, round(width * scale)), max(shape.size, round(height * scale)))
        if new != (width, height):
            image = image.resize(new, Image.LANCZOS)
        left, top = (new[0] - shape.size) // 2, (new[1] - shape.size) // 2
        image = image.crop((left, top, left + shape.size, top + shape.size))
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def open_image(payload: bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode encoded bytes fully; a bomb, a truncated or an unknown file raises SkipImage. More than `max_pixels`
    pixels (Pillow's limit where that is lower or none is given) raises TooManyPixels before any is decoded."""
    if not payload:
        raise SkipImage("is empty (0 bytes)")
    limit = min((n for n in (max_pixels, Image.MAX_IMAGE_PIXELS) if n), default=None)
    try:
        # Pillow raises above twice its pixel limit and only warns between one and two times it; the size is
        # checked here, before decoding, rather than by turning the warning into an error with
        # warnings.catch_warnings, which is not thread-safe (images are decoded in several threads at once).
        image = Image.open(io.BytesIO(payload), formats=readable_formats())  # never by content sniffing as EPS
        if limit and image.width * image.height > limit:
            raise TooManyPixels(limit, image.size)
        image.load()
        return ImageOps.exif_transpose(image)  # phone photos are stored sideways with an orientation tag
    except SkipImage:
        raise
    except Image.DecompressionBombError:
        raise TooManyPixels(limit) from None
    except UnidentifiedImageError:
        raise NotAnImage("is not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt data
        raise SkipImage(f"is damaged ({err})") from None
    except Exception as err:  # Pillow's readers raise others on some damaged files (struct.error, NotImplementedError)
        raise SkipImage(f"is damaged ({type(err).__name__}: {err})") from None


def array_to_image(array: np.ndarray) -> Image.Image:
    """uint8 [H, W, C] (C = 1, 3 or 4) -> a Pillow image in mode L, RGB or RGBA."""
    channels = array.shape[2]
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode={1: "L", 3: "RGB", 4: "RGBA"}[channels])
