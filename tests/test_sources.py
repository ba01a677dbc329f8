"""Data sources, decoded to exact pixels: image folders in every Pillow mode, zips, .npz/.npy arrays, CIFAR-10's
binary archive and IDX files; and bad input, skipped and counted or refused in one sentence naming the file.

Everything is generated here, tiny; the cache is the session's private one (conftest), and after every failure
it must hold nothing half-written.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data, write_idx
from tinydiffusion.data.formats.arrays import MAX_CLASSES
from tinydiffusion.data.images import Shape, SkipImage, open_image, shape_image
from tinydiffusion.errors import UserError
from tinydiffusion.files import cache_dir

# --- helpers (test_prepare.py imports them too) ----------------------------------------------------


def save(path: Path, image: Image.Image, **options) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def random_rgb(rng, size=(8, 8)) -> np.ndarray:
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def make_class_folder(root: Path, classes=("cat", "dog"), per_class=2, size=(8, 8), seed=0) -> dict[str, np.ndarray]:
    """root/<class>/<i>.png of random colour pixels; returns {relative name: pixels} in sorted order."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        for i in range(per_class):
            pixels = random_rgb(rng, size)
            save(root / name / f"{i}.png", Image.fromarray(pixels))
            written[f"{name}/{i}.png"] = pixels
    return dict(sorted(written.items()))


def load(source, split: str = "train", **options):
    return load_data(DataConfig(source=str(source), **options), split, progress=False)


def nhwc(dataset) -> np.ndarray:
    return dataset.images.permute(0, 2, 3, 1).numpy()


def prepared_entries() -> set[str]:
    """The prepared folders in the cache (not the lock files beside them)."""
    folder = cache_dir() / "prepared"
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


def assert_cache_clean() -> None:
    """Nothing half-written in the cache: no temporaries, and every prepared entry complete."""
    root = cache_dir()
    leftovers = [p for p in root.rglob("*") if p.name.endswith((".tmp", ".all"))] if root.is_dir() else []
    assert leftovers == []
    for name in prepared_entries():
        assert (root / "prepared" / name / "data.json").is_file(), name


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (rather than hang) when the body takes longer than `seconds`."""
    def expired(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refused(source, *fragments, **options) -> str:
    """Loading `source` is one UserError sentence naming it (and containing each fragment); nothing half-written."""
    with pytest.raises(UserError) as info:
        load(source, **options)
    message = str(info.value)
    assert Path(source).name in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message and "Traceback" not in message
    assert_cache_clean()
    return message


# --- one image in every mode, with exact pixels ----------------------------------------------------

WHITE, BLACK = {}, {"alpha_background": "black"}
JPEG, JPEG_RGB = {"image_size": 4}, {"image_size": 4, "channels": 3}  # JPEGs are saved 8x8, shrunk to 4x4
MODE_CASES = [  # id, image, file suffix, options, expected pixel (all 4x4 pixels), tolerance
    ("L", Image.new("L", (4, 4), 77), ".png", {}, [77], 0),
    ("1", Image.new("1", (4, 4), 1), ".png", {}, [255], 0),
    ("LA-opaque", Image.new("LA", (4, 4), (200, 255)), ".png", {}, [200], 0),
    ("LA-transparent-white", Image.new("LA", (4, 4), (30, 0)), ".png", WHITE, [255], 0),
    ("LA-transparent-black", Image.new("LA", (4, 4), (30, 0)), ".png", BLACK, [0], 0),
    ("LA-half-black", Image.new("LA", (4, 4), (200, 128)), ".png", BLACK, [100], 1),
    ("RGB", Image.new("RGB", (4, 4), (10, 200, 30)), ".png", {}, [10, 200, 30], 0),
    ("RGBA-opaque", Image.new("RGBA", (4, 4), (10, 200, 30, 255)), ".png", {}, [10, 200, 30], 0),
    ("RGBA-transparent-white", Image.new("RGBA", (4, 4), (0, 255, 0, 0)), ".png", WHITE, [255, 255, 255], 0),
    ("RGBA-transparent-black", Image.new("RGBA", (4, 4), (0, 255, 0, 0)), ".png", BLACK, [0, 0, 0], 0),
    ("RGBA-half-white", Image.new("RGBA", (4, 4), (255, 0, 0, 128)), ".png", WHITE, [255, 127, 127], 1),
    ("RGBA-half-black", Image.new("RGBA", (4, 4), (255, 0, 0, 128)), ".png", BLACK, [128, 0, 0], 1),
    ("grey-RGB-is-one-channel", Image.new("RGB", (4, 4), (90, 90, 90)), ".png", {}, [90], 0),
    ("L-as-three-channels", Image.new("L", (4, 4), 77), ".png", {"channels": 3}, [77, 77, 77], 0),
    ("RGB-as-luma", Image.new("RGB", (4, 4), (255, 0, 0)), ".png", {"channels": 1}, [76], 0),
    ("JPEG-L", Image.new("L", (8, 8), 90), ".jpg", JPEG, [90], 2),
    ("JPEG-RGB", Image.new("RGB", (8, 8), (200, 30, 60)), ".jpg", JPEG, [200, 30, 60], 4),
    ("JPEG-CMYK-cyan", Image.new("CMYK", (8, 8), (255, 0, 0, 0)), ".jpg", JPEG, [0, 255, 255], 3),
    ("JPEG-CMYK-white", Image.new("CMYK", (8, 8), (0, 0, 0, 0)), ".jpg", JPEG_RGB, [255] * 3, 3),
    ("JPEG-CMYK-black", Image.new("CMYK", (8, 8), (0, 0, 0, 255)), ".jpg", JPEG_RGB, [0] * 3, 3),
    ("TIFF-I;16", Image.new("I;16", (4, 4), 257 * 60), ".tif", {}, [60], 0),
    ("BMP", Image.new("RGB", (4, 4), (1, 2, 3)), ".bmp", {}, [1, 2, 3], 0),
    ("WEBP-lossless", Image.new("RGB", (4, 4), (1, 2, 3)), ".webp", {}, [1, 2, 3], 0),
]


@pytest.mark.parametrize("image,suffix,options,expected,tolerance",
                         [case[1:] for case in MODE_CASES], ids=[case[0] for case in MODE_CASES])
def test_every_mode_becomes_exact_grey_or_rgb_pixels(tmp_path, image, suffix, options, expected, tolerance):
    extra = {"lossless": True} if suffix == ".webp" else {"quality": 100} if suffix == ".jpg" else {}
    save(tmp_path / "source" / f"image{suffix}", image, **extra)
    dataset = load(tmp_path / "source", **options)
    assert dataset.images.dtype == torch.uint8 and dataset.images.shape == (1, len(expected), 4, 4)
    assert dataset.labels is None and dataset.class_names == ()
    difference = np.abs(nhwc(dataset)[0].astype(int) - np.array(expected))
    assert difference.max() <= tolerance, nhwc(dataset)[0, 0, 0]


def test_sixteen_bit_grey_is_scaled_to_eight_bits(tmp_path):
    row = np.array([0, 257 * 60, 65535, 1000], dtype=np.uint16)  # 1000 / 257 = 3.89
    save(tmp_path / "source" / "deep.png", Image.fromarray(np.tile(row, (4, 1))))
    assert Image.open(tmp_path / "source" / "deep.png").mode == "I;16"
    dataset = load(tmp_path / "source")
    assert dataset.images.shape == (1, 1, 4, 4)
    assert nhwc(dataset)[0, :, :, 0].tolist() == [[0, 60, 255, 4]] * 4


@pytest.mark.parametrize("transparent", [False, True])
@pytest.mark.parametrize("background", ["white", "black"])
def test_palette_images_take_their_colours_and_transparency(tmp_path, transparent, background):
    indices = np.kron(np.array([[0, 1], [1, 2]], np.uint8), np.ones((2, 2), np.uint8))  # 4x4, three colours
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    save(tmp_path / "source" / "palette.png", image, **({"transparency": 0} if transparent else {}))
    dataset = load(tmp_path / "source", alpha_background=background)
    first = {"white": [255, 255, 255], "black": [0, 0, 0]}[background] if transparent else [255, 0, 0]
    colours = np.array([first, [0, 0, 255], [0, 255, 0]], np.uint8)
    assert np.array_equal(nhwc(dataset)[0], colours[indices])


def test_a_palette_with_alpha_per_entry_loads_without_a_pillow_warning(tmp_path):
    """Palette PNGs whose transparency is a table of alphas (many emoji sets) once made Pillow warn while the
    folder's channels were chosen."""
    image = Image.fromarray(np.kron(np.array([[0, 1], [1, 2]], np.uint8), np.ones((2, 2), np.uint8)), mode="P")
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    save(tmp_path / "source" / "palette.png", image, transparency=bytes([0, 128, 255]))
    assert isinstance(Image.open(tmp_path / "source" / "palette.png").info["transparency"], bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = load(tmp_path / "source")
    assert dataset.images.shape == (1, 3, 4, 4)


def test_grey_folders_default_to_one_channel_and_any_colour_to_three(tmp_path):
    save(tmp_path / "grey" / "a.png", Image.new("L", (4, 4), 10))
    save(tmp_path / "grey" / "b.jpg", Image.new("RGB", (4, 4), (50, 50, 50)), quality=100)
    assert load(tmp_path / "grey").images.shape == (2, 1, 4, 4)
    save(tmp_path / "mixed" / "a.png", Image.new("L", (4, 4), 10))
    save(tmp_path / "mixed" / "b.png", Image.new("RGB", (4, 4), (50, 60, 70)))
    mixed = load(tmp_path / "mixed")
    assert mixed.images.shape == (2, 3, 4, 4)
    assert nhwc(mixed)[0, 0, 0].tolist() == [10, 10, 10] and nhwc(mixed)[1, 0, 0].tolist() == [50, 60, 70]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((4, 8), np.uint8)
    pixels[:, :4] = 255  # landscape, left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    save(tmp_path / "source" / "photo.png", Image.fromarray(pixels), exif=exif.tobytes())
    dataset = load(tmp_path / "source")
    assert dataset.images.shape == (1, 1, 4, 4)  # shown as 4x8 portrait, centre-cropped to 4x4
    assert nhwc(dataset)[0, :, :, 0].tolist() == [[255] * 4] * 2 + [[0] * 4] * 2


# --- size: resize the shorter side, centre-crop, never blow up ------------------------------------


def test_resize_then_centre_crop_geometry():
    wide = np.zeros((32, 64), np.uint8)
    wide[:, :32] = 255  # a 64x32 image whose left half is bright
    out = shape_image(Image.fromarray(wide), Shape(16, 1))[..., 0]
    assert out.shape == (16, 16)  # 64x32 -> 32x16 -> the middle 16 columns: half bright, half dark
    assert (out[:, :6] >= 250).all() and (out[:, 10:] <= 5).all()
    assert abs(int(out[:, :8].mean()) + int(out[:, 8:].mean()) - 255) <= 2  # the edge lies in the middle
    tall = shape_image(Image.fromarray(np.ascontiguousarray(wide.T)), Shape(16, 1))[..., 0]
    assert np.array_equal(tall, out.T)  # portrait: the middle rows

    thirds = np.zeros((16, 48, 3), np.uint8)
    thirds[:, :16], thirds[:, 16:32], thirds[:, 32:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    middle = shape_image(Image.fromarray(thirds), Shape(16, 3))
    assert (middle == (0, 255, 0)).all()  # no resize needed: exactly the middle third


def test_images_already_at_the_size_pass_through_exactly(tmp_path):
    rng = np.random.default_rng(1)
    colour = [random_rgb(rng, (16, 16)) for _ in range(3)]
    grey = [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(2)]
    for i, pixels in enumerate(colour):
        save(tmp_path / "colour" / f"{i}.png", Image.fromarray(pixels))
    for i, pixels in enumerate(grey):
        save(tmp_path / "grey" / f"{i}.png", Image.fromarray(pixels))
    assert np.array_equal(nhwc(load(tmp_path / "colour")), np.stack(colour))
    assert np.array_equal(nhwc(load(tmp_path / "grey", image_size=16))[..., 0], np.stack(grey))


def test_mixed_sizes_and_nested_class_folders(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "pets"
    save(root / "cat" / "a.png", Image.fromarray(random_rgb(rng, (16, 16))))
    save(root / "cat" / "deep" / "er" / "b.png", Image.fromarray(random_rgb(rng, (20, 30))))
    save(root / "dog" / "c.jpg", Image.fromarray(random_rgb(rng, (40, 16))))
    save(root / "dog" / "d.png", Image.fromarray(random_rgb(rng, (16, 16))))
    save(root / "stray.png", Image.fromarray(random_rgb(rng, (16, 16))))  # beside the class folders
    (root / "dog" / "notes.txt").write_text("not an image")
    dataset = load(root)
    assert dataset.class_names == ("cat", "dog")
    assert dataset.labels.tolist() == [0, 0, 1, 1]  # cat/deep/er/b.png belongs to cat
    assert dataset.images.shape == (4, 3, 16, 16)  # the most common shorter side
    assert dataset.manifest["class_counts"] == [2, 2] and dataset.manifest["skipped_count"] == 2
    line = capsys.readouterr().out
    assert "prepared 4 images of 16x16x3, 2 classes" in line and "skipped 2 files" in line
    assert "stray.png lies outside the class folders" in line and "dog/notes.txt is not an image file" in line


MODES = ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I"]


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 70000, (height, width)).astype(np.int32))
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    if mode == "P+transparency":
        image = rgba.convert("RGB").convert("P")
        image.info["transparency"] = 0
        return image
    return rgba if mode == "RGBA" else rgba.convert("RGB").convert(mode)


@settings(max_examples=120, deadline=None)
@given(mode=st.sampled_from(MODES), width=st.integers(1, 40), height=st.integers(1, 40), size=st.integers(1, 24),
       channels=st.sampled_from([1, 3]), background=st.sampled_from([(255, 255, 255), (0, 0, 0)]),
       seed=st.integers(0, 1000), encoded=st.booleans())
def test_shape_image_gives_exactly_the_requested_shape(mode, width, height, size, channels, background, seed,
                                                       encoded):
    image = make_image(mode, width, height, seed)
    if encoded and mode not in ("I", "YCbCr", "CMYK"):  # and through a PNG file, as a folder is read
        image = open_image(encode(image, transparency=0) if mode == "P+transparency" else encode(image))
    shape = Shape(size, channels, background)
    if min(width, height) < size:
        with pytest.raises(SkipImage, match=f"{width}x{height}, smaller than the requested {size}"):
            shape_image(image, shape)
        return
    out = shape_image(image, shape)
    assert out.dtype == np.uint8 and out.shape == (size, size, channels)
    if (width, height) == (size, size) and mode == "L" and channels == 1:
        assert np.array_equal(out[..., 0], np.asarray(image))


SEEDS = [encode(Image.fromarray(random_rgb(np.random.default_rng(0), (12, 10))), fmt, **options)
         for fmt, options in (("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {}),
                              ("ICO", {}), ("TGA", {}), ("PPM", {}), ("DDS", {}), ("JPEG", {"progressive": True}))]


@settings(max_examples=300, deadline=None)
@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                  max_size=6), cut=st.integers(0, 10**6) | st.none())
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader warns about damaged tags
def test_damaged_files_decode_or_are_skipped_never_crash(seed, edits, cut):
    payload = bytearray(seed)
    for where, value in edits:
        payload[where % len(payload)] = value
    payload = payload[:cut] if cut is not None else payload
    try:
        image = open_image(bytes(payload))
    except SkipImage:
        return
    for channels in (1, 3):
        try:
            assert shape_image(image, Shape(4, channels)).shape == (4, 4, channels)
        except SkipImage:
            pass


# --- zips -----------------------------------------------------------------------------------


def zip_folder(folder: Path, archive: Path, top: str | None) -> Path:
    """Zip every file below `folder`, under one top folder `top` (as zipping a folder does) or none."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if path.is_dir():
                continue
            z.write(path, f"{top}/{name}" if top else name)
    return archive


@pytest.mark.parametrize("top", ["pets", None])
def test_a_zip_of_a_folder_is_read_without_extracting(tmp_path, top):
    written = make_class_folder(tmp_path / "pets")
    holder = tmp_path / "zips"
    holder.mkdir()
    archive = zip_folder(tmp_path / "pets", holder / "pets.zip", top)
    dataset = load(archive)
    assert dataset.class_names == ("cat", "dog") and dataset.labels.tolist() == [0, 0, 1, 1]
    assert np.array_equal(nhwc(dataset), np.stack(list(written.values())))
    assert [p.name for p in holder.iterdir()] == ["pets.zip"]  # nothing extracted or written beside it


def test_a_flat_zip_is_unlabelled(tmp_path):
    rng = np.random.default_rng(3)
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as z:
        for i in range(3):
            z.writestr(f"photos/{i}.png", encode(Image.fromarray(random_rgb(rng))))
    dataset = load(tmp_path / "flat.zip")
    assert dataset.labels is None and dataset.images.shape == (3, 3, 8, 8)


def test_a_zip_made_by_macos_keeps_its_classes(tmp_path, capsys):
    written = make_class_folder(tmp_path / "pets")
    with zipfile.ZipFile(tmp_path / "pets.zip", "w") as z:
        for name in written:
            z.write(tmp_path / "pets" / name, f"pets/{name}")
            folder, file = name.split("/")
            z.writestr(f"__MACOSX/pets/{folder}/._{file}", b"\x00\x05\x16\x07 AppleDouble resource fork")
    dataset = load(tmp_path / "pets.zip")
    assert dataset.class_names == ("cat", "dog") and dataset.labels.tolist() == [0, 0, 1, 1]
    assert "__MACOSX" not in capsys.readouterr().out


def test_a_damaged_member_of_a_zip_is_skipped(tmp_path, capsys):
    rng = np.random.default_rng(4)
    with zipfile.ZipFile(tmp_path / "damaged.zip", "w") as z:
        for i in range(3):
            z.writestr(f"{i}.png", encode(Image.fromarray(random_rgb(rng))))
    payload = bytearray((tmp_path / "damaged.zip").read_bytes())
    payload[payload.index(b"IDAT") + 8] ^= 0xFF  # the first member's stored bytes no longer match its CRC
    (tmp_path / "damaged.zip").write_bytes(bytes(payload))
    dataset = load(tmp_path / "damaged.zip")
    assert len(dataset) == 2
    assert "skipped 1 file: 0.png cannot be read from damaged.zip" in capsys.readouterr().out


def test_a_zip_that_is_not_a_zip(tmp_path):
    (tmp_path / "photos.zip").write_bytes(b"PK\x03\x04 but nothing after the signature")
    refused(tmp_path / "photos.zip", "not a readable zip archive")


# --- arrays ---------------------------------------------------------------------------------


def test_an_npz_with_labels_and_class_names(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "pets.npz", images=images, labels=np.array([1, 0, 2, 1]),
             class_names=np.array(["cat", "dog", "eel"]))
    dataset = load(tmp_path / "pets.npz")
    assert dataset.class_names == ("cat", "dog", "eel") and dataset.labels.tolist() == [1, 0, 2, 1]
    assert np.array_equal(nhwc(dataset), images)
    assert dataset.manifest["class_counts"] == [1, 2, 1]


def test_an_npz_arr_0_and_an_npy(tmp_path):
    grey = np.random.default_rng(6).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "samples.npz", grey)  # saved as arr_0, like `sample --out x.npz`
    dataset = load(tmp_path / "samples.npz")
    assert dataset.labels is None and np.array_equal(nhwc(dataset)[..., 0], grey)
    colour = np.random.default_rng(7).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "colour.npy", colour)
    assert np.array_equal(nhwc(load(tmp_path / "colour.npy")), colour)
    assert nhwc(load(tmp_path / "colour.npy", image_size=4, channels=1)).shape == (3, 4, 4, 1)


def test_an_rgba_array_is_composited(tmp_path):
    rgba = np.zeros((2, 4, 4, 4), np.uint8)
    rgba[..., 1] = 255  # green, fully transparent...
    rgba[1, ..., 3] = 255  # ...except the second image
    np.save(tmp_path / "rgba.npy", rgba)
    dataset = load(tmp_path / "rgba.npy", channels=3)
    assert (nhwc(dataset)[0] == 255).all() and (nhwc(dataset)[1] == (0, 255, 0)).all()
    assert (nhwc(load(tmp_path / "rgba.npy", channels=3, alpha_background="black"))[0] == 0).all()


@settings(max_examples=50, deadline=None)
@given(labels=st.lists(st.integers(0, 5), min_size=4, max_size=4)  # one per image
       | st.lists(st.integers(-3, 2**40), min_size=4, max_size=4)  # negative, or far too many classes
       | st.lists(st.integers(0, 5), max_size=6),  # perhaps not one per image
       dtype=st.sampled_from(["int64", "int64", "uint8", "int16", "float32", "bool"]))
def test_npz_labels_are_used_or_refused_in_one_sentence(labels, dtype):
    images = np.zeros((4, 4, 4), np.uint8)
    images[:, 0, 0] = np.arange(4)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.npz"
        stored = np.array(labels).astype(dtype) if dtype != "bool" else np.array(labels) % 2 == 1
        np.savez(path, images=images, labels=stored)
        valid = (len(labels) == 4 and dtype not in ("float32", "bool") and all(stored >= 0)
                 and int(stored.max()) < MAX_CLASSES)
        if not valid:
            with deadline(20):
                refused(path, "labels")
            return
        dataset = load(path)
        assert dataset.labels.tolist() == stored.astype(np.int64).tolist()
        assert dataset.class_names == tuple(str(i) for i in range(int(stored.max()) + 1))
        assert nhwc(dataset)[:, 0, 0, 0].tolist() == [0, 1, 2, 3]


def test_npz_labels_that_do_not_match_the_images(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2]))
    refused(tmp_path / "bad.npz", "4 non-negative integers, one per image")
    np.savez(tmp_path / "huge.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 10**12]))
    with deadline(20):  # not a tuple of 10^12 class names
        refused(tmp_path / "huge.npz", "go up to 1000000000000")


def _unpickled(marker: str) -> None:  # what the object array below runs if anything unpickles it
    Path(marker).touch()


class Trap:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return _unpickled, (self.marker,)


def test_arrays_that_need_pickle_are_refused_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    np.save(tmp_path / "objects.npy", np.array([Trap(marker), Trap(marker)], dtype=object), allow_pickle=True)
    refused(tmp_path / "objects.npy", "never unpickles")
    np.savez(tmp_path / "objects.npz", images=np.zeros((2, 4, 4), np.uint8),
             labels=np.array([Trap(marker), Trap(marker)], dtype=object))
    refused(tmp_path / "objects.npz", "never unpickles")
    assert not marker.exists()


def test_an_array_that_is_not_images(tmp_path):
    np.save(tmp_path / "floats.npy", np.zeros((2, 8, 8), np.float32))
    refused(tmp_path / "floats.npy", "uint8")
    np.save(tmp_path / "small.npy", np.zeros((2, 8, 8), np.uint8))
    refused(tmp_path / "small.npy", "smaller than the requested 16", image_size=16)


# --- CIFAR-10's binary archive and IDX files ---------------------------------------------------

CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_cifar(folder: Path, per_batch: int = 2, test: int = 3, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-10-binary.tar.gz in the official layout: records of 1 label byte and the R, G, B 32x32 planes.
    The first training image is black but for three known pixels. Returns (archive, train HWC, train labels)."""
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, (5 * per_batch, 3, 32, 32), dtype=np.uint8)
    planes[0] = 0
    planes[0, 0, 0, 1] = 200  # red, top row, second column
    planes[0, 1, 1, 0] = 100  # green, second row, first column
    planes[0, 2, 31, 30] = 50  # blue, bottom row, second to last column
    labels = rng.integers(0, 10, 5 * per_batch).astype(np.uint8)
    test_planes = rng.integers(0, 256, (test, 3, 32, 32), dtype=np.uint8)

    def records(p, lab):
        return b"".join(bytes([int(label)]) + image.tobytes() for image, label in zip(p, lab, strict=True))

    members = {f"data_batch_{i + 1}.bin": records(planes[i * per_batch:(i + 1) * per_batch],
                                                  labels[i * per_batch:(i + 1) * per_batch]) for i in range(5)}
    members["test_batch.bin"] = records(test_planes, np.arange(test) % 10)
    members["batches.meta.txt"] = ("\n".join(CIFAR_NAMES) + "\n\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive, planes.transpose(0, 2, 3, 1), labels


def test_cifar10_binary_pixel_order_and_orientation(tmp_path):
    archive, images, labels = make_cifar(tmp_path / "cifar")
    dataset = load(archive)
    assert dataset.images.shape == (10, 3, 32, 32) and dataset.class_names == CIFAR_NAMES
    assert dataset.labels.tolist() == labels.tolist()
    first = nhwc(dataset)[0]
    assert first[0, 1].tolist() == [200, 0, 0] and first[1, 0].tolist() == [0, 100, 0]
    assert first[31, 30].tolist() == [0, 0, 50] and int(first.astype(int).sum()) == 350
    assert np.array_equal(nhwc(dataset), images)
    test = load(archive, split="test")
    assert len(test) == 3 and test.labels.tolist() == [0, 1, 2]
    named = load_data(DataConfig(source="cifar10", data_dir=str(tmp_path / "cifar"), download=False), progress=False)
    assert named.class_names == CIFAR_NAMES and np.array_equal(nhwc(named), images)


def test_a_cifar_archive_with_a_wrong_batch(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = 3073  # one whole record, but the other four batches are missing
        tar.addfile(info, io.BytesIO(bytes(3073)))
    refused(archive, "no cifar-10-batches-bin/data_batch_2.bin")


def test_mnist_idx_files_in_the_official_layout(tmp_path):
    rng = np.random.default_rng(8)
    train, test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (5, 2))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([3, 1, 4, 1, 5], np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([9, 2], np.uint8))
    config = DataConfig(source="mnist", data_dir=str(tmp_path), download=False)
    dataset = load_data(config, progress=False)
    assert dataset.images.shape == (5, 1, 28, 28) and np.array_equal(nhwc(dataset)[..., 0], train)
    assert dataset.labels.tolist() == [3, 1, 4, 1, 5] and dataset.class_names == tuple("0123456789")
    held_out = load_data(config, "test", progress=False)
    assert np.array_equal(nhwc(held_out)[..., 0], test) and held_out.labels.tolist() == [9, 2]
    by_path = load(tmp_path)  # the same folder as a path: classes named after the labels present
    assert by_path.class_names == tuple("012345") and np.array_equal(nhwc(by_path)[..., 0], train)


# --- bad input: skipped and counted, or one sentence naming the file ------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (nothing that size is ever allocated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "holds no image files")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.txt").write_text("no images here")
    refused(tmp_path / "texts", "holds no image files")


def test_a_source_that_does_not_exist(tmp_path):
    refused(tmp_path / "nowhere", "does not exist")
    refused(tmp_path / "nowhere.zip", "does not exist")


def test_a_file_of_no_known_kind(tmp_path):
    (tmp_path / "data.csv").write_text("1,2,3\n")
    refused(tmp_path / "data.csv", "not a data source")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_files_are_skipped_and_counted(tmp_path, capsys):
    rng = np.random.default_rng(9)
    root = tmp_path / "mess"
    for i in range(2):
        save(root / f"good{i}.png", Image.fromarray(random_rgb(rng, (8, 8))))
    jpeg = encode(Image.fromarray(random_rgb(rng, (64, 64))), "JPEG")
    (root / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    (root / "empty.png").write_bytes(b"")
    save(root / "tiny.png", Image.fromarray(random_rgb(rng, (4, 6))))
    (root / "bomb.png").write_bytes(png_claiming(100_000, 100_000))  # 10^10 pixels: Pillow refuses outright
    (root / "big.png").write_bytes(png_claiming(10_000, 10_000))  # 10^8: between Pillow's warning and its error
    (root / "text.png").write_bytes(b"this is not a PNG at all")
    (root / "notes.txt").write_text("not an image")
    Image.new("LAB", (8, 8)).save(root / "lab.tif")  # a mode Pillow reads but cannot make grey
    dds = bytearray(encode(Image.new("RGB", (8, 8)), "DDS"))
    dds[80:84] = struct.pack("<I", 8)  # a pixel format Pillow's reader raises NotImplementedError for
    (root / "odd.dds").write_bytes(bytes(dds))
    with deadline(20):
        dataset = load(root, image_size=8, channels=1)
    assert len(dataset) == 2
    skipped = dict(dataset.manifest["skipped"])
    assert skipped == {
        "truncated.jpg": skipped["truncated.jpg"], "empty.png": "is empty (0 bytes)",
        "tiny.png": "is 4x6, smaller than the requested 8 pixels", "bomb.png": skipped["bomb.png"],
        "big.png": skipped["big.png"], "text.png": "is not an image Pillow can read",
        "notes.txt": "is not an image file", "lab.tif": skipped["lab.tif"], "odd.dds": skipped["odd.dds"]}
    assert skipped["truncated.jpg"].startswith("is damaged") and skipped["odd.dds"].startswith("is damaged")
    assert "decompression bomb" in skipped["bomb.png"] and "decompression bomb" in skipped["big.png"]
    assert "cannot be converted" in skipped["lab.tif"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("prepared 2 images of 8x8x1, unlabelled") and "skipped 9 files" in line
    assert_cache_clean()


def test_every_image_bad_is_one_sentence(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "b.png").write_bytes(b"garbage")
    refused(tmp_path / "bad", "none of the 2 files", "a.png is empty")


def test_links_that_dangle_or_loop_are_skipped_and_the_walk_ends(tmp_path, capsys):
    root = tmp_path / "linked"
    written = make_class_folder(root)
    os.symlink(root / "cat" / "missing.png", root / "cat" / "gone.png")  # dangling
    os.symlink(root / "dog" / "y.png", root / "dog" / "x.png")  # x -> y -> x
    os.symlink(root / "dog" / "x.png", root / "dog" / "y.png")
    os.symlink("..", root / "cat" / "parent")  # a folder link back up the tree
    os.symlink(".", root / "dog" / "itself")
    with deadline(20):
        dataset = load(root)
    assert dataset.class_names == ("cat", "dog") and len(dataset) == len(written)
    assert np.array_equal(nhwc(dataset), np.stack(list(written.values())))  # each image once
    skipped = dict(dataset.manifest["skipped"])
    assert set(skipped) == {"cat/gone.png", "dog/x.png", "dog/y.png"}
    assert all(why.startswith("cannot be read") for why in skipped.values())
    assert "skipped 3 files" in capsys.readouterr().out


def test_a_class_with_one_image_is_a_warning_naming_it(tmp_path, capsys):
    make_class_folder(tmp_path / "zoo", classes=("ant", "bee"), per_class=2)
    save(tmp_path / "zoo" / "cow" / "only.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    dataset = load(tmp_path / "zoo")
    assert dataset.class_names == ("ant", "bee", "cow") and dataset.manifest["class_counts"] == [2, 2, 1]
    out = capsys.readouterr().out
    assert "warning: 1 class of" in out and "has fewer than 2 images: 'cow' (1);" in out
    assert "'ant'" not in out and "'bee'" not in out


@pytest.mark.parametrize("names", [("train", "test"), ("Train", "Val")])
def test_split_folders_instead_of_class_folders(tmp_path, names):
    for name in names:
        make_class_folder(tmp_path / "data" / name)
    message = refused(tmp_path / "data", "split folders", "not class folders")
    assert f"({tmp_path / 'data' / names[0]})" in message  # points at the train folder, as it is spelled
