"""The prepared store: any source decoded once into one uint8 array, with a JSON manifest beside it.

    NAME.npy          uint8 [N, H, W, C] (NumPy's own format, so it can be memory-mapped)
    NAME.labels.npy   int64 [N], only for labelled data
    NAME.json         the manifest: source, split, shape, class names, counts, the input fingerprint,
                      the sha256 of the arrays, and what was skipped and why

Training reads only this, so a folder of PNGs trains as fast as IDX files: no per-image Python work
after preparation. Files are written under temporary names and renamed, the manifest last, so a crash
or Ctrl-C never leaves a half-prepared dataset that looks complete.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import words
from ..errors import UserError
from ..files import atomic_file, read_regular_file
from ..nets.base import MAX_IMAGE_SIZE
from .cache import MANIFEST_BYTES
from .formats import SourceImages
from .images import Shape, SkipImage, array_to_image, open_image, shape_image
from .memory import default_memory_limit

MANIFEST_FORMAT = "tinydiffusion-prepared"
VERSION = 1
DEFAULT_MAX_SIZE = 64  # a folder of photos is not trained at its full resolution unless asked
SAMPLE_FOR_DEFAULTS = 500  # images looked at to choose a folder's default size and channels
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
MIN_SIZE = 4  # the smallest side a network is built for (as data.image_size)
GREY_ROUNDING = 2  # how far lossy coding moves a grey pixel's channels apart (WebP: 1)


@dataclass
class Prepared:
    images: np.ndarray  # uint8 [N, H, W, C], in memory or memory-mapped
    labels: np.ndarray | None  # int64 [N]
    manifest: dict
    memory_mapped: bool


def paths_of(stem: Path) -> tuple[Path, Path, Path]:
    """(images, labels, manifest) for a prepared dataset whose images file is `stem`.npy."""
    stem = Path(stem)
    base = stem.with_suffix("") if stem.suffix == ".npy" else stem
    return tuple(base.with_name(base.name + ending) for ending in (".npy", ".labels.npy", ".json"))


def read_manifest(path: Path) -> bytes:
    """A manifest's bytes; NotAFile (an OSError) for a named pipe, a device or a file past cache.MANIFEST_BYTES (the
    one limit `tinydiffusion cache` reads them with too), whose reading would wait or never end."""
    return read_regular_file(path, MANIFEST_BYTES)


def is_prepared(path: Path) -> bool:
    """An .npy written by `prepare` (its manifest beside it), rather than a plain array."""
    if Path(path).suffix != ".npy":
        return False
    try:
        return json.loads(read_manifest(paths_of(path)[2])).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# --- making one ------------------------------------------------------------------------------

def choose_shape(found: SourceImages, image_size: int, channels: int, background: str,
                 what: str) -> tuple[Shape, str]:
    """(the shape, a note on how the channels were chosen or ""): the requested size and channels, or the
    source's own: an array's shape, or for files the most common shorter side (at most DEFAULT_MAX_SIZE) and
    colour if at least half the sampled images have colour. An image whose red, green and blue agree is grey,
    whatever its mode (Pillow decodes every WebP as RGB), so a stray colour file does not make a grey set RGB."""
    if background not in BACKGROUNDS:
        raise UserError(f"data.alpha_background must be white or black, not {background!r}.")
    note = ""
    if found.array is not None:
        _, h, w, c = found.array.shape
        size = min(h, w)
        colour = c >= 3 and not all(_is_grey(image[..., :3]) for image in found.array[:SAMPLE_FOR_DEFAULTS])
    elif image_size and channels:
        size, colour = image_size, channels == 3
    else:
        step = max(1, len(found.files) // SAMPLE_FOR_DEFAULTS)
        sides, coloured, grey = collections.Counter(), [], 0
        for file in found.files[::step]:
            try:
                image = open_image(file.read())
                if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") or \
                        _is_grey(np.asarray(image.convert("RGBA"))[..., :3]):  # RGBA: no warning on a palette's alpha
                    grey += 1
                else:
                    coloured.append(file.name)
            except (SkipImage, OSError, ValueError):  # ValueError: a mode Pillow cannot convert
                continue
            sides[min(image.size)] += 1
        size = min(sides.most_common(1)[0][0], DEFAULT_MAX_SIZE) if sides else DEFAULT_MAX_SIZE
        colour = len(coloured) >= grey and bool(coloured)
        if coloured and grey and not channels:
            note = (f"{'3 channels' if colour else '1 channel (grey)'}: {words.count(len(coloured), 'image')} of the "
                    f"{len(coloured) + grey:,} looked at {'have' if len(coloured) != 1 else 'has'} colour "
                    f"({coloured[0]}{', ...' if len(coloured) > 1 else ''}), the rest {'are' if grey != 1 else 'is'} "
                    f"grey; --data.channels {1 if colour else 3} chooses otherwise.")
    size = image_size or size
    if not MIN_SIZE <= size <= MAX_IMAGE_SIZE:
        too = "smaller" if size < MIN_SIZE else "larger"
        raise UserError(f"the images in {what} are {words.count(size, 'pixel')} on their shorter side, "
                        f"{too} than the {MIN_SIZE} to {MAX_IMAGE_SIZE:,} pixels a network takes; "
                        + ("give larger images." if too == "smaller" else "give --data.image_size N (64, say) to "
                           "resize them."))
    return Shape(size, channels or (3 if colour else 1), BACKGROUNDS[background]), note


def _is_grey(rgb: np.ndarray) -> bool:
    """Red, green and blue agree, but for the unbiased rounding of lossy coding: a grey WebP (which Pillow decodes
    as RGB) has channels 1 apart here and there; a colour, however faint, shifts a channel on average."""
    rgb = rgb.astype(np.int16)
    for difference in (rgb[..., 0] - rgb[..., 1], rgb[..., 1] - rgb[..., 2]):
        if np.abs(difference).max(initial=0) > GREY_ROUNDING or abs(difference.mean()) > GREY_ROUNDING / 8:
            return False
    return True


def _shape_all(found: SourceImages, shape: Shape, out: np.ndarray, progress: bool, what: str):
    """Fill `out` with every usable image in order; return (labels of the kept ones, skipped (name, why))."""
    if found.array is not None:
        n, h, w, c = found.array.shape
        native = (h, w) == (shape.size, shape.size) and c == shape.channels
        for start in tqdm(range(0, n, 4096), desc=f"preparing {what}", unit="chunk", disable=not progress):
            chunk = np.asarray(found.array[start:start + 4096])
            if native:  # already the right shape: a copy, no per-image work
                out[start:start + len(chunk)] = chunk
                continue
            for i, image in enumerate(chunk, start):
                out[i] = shape_image(array_to_image(image), shape)  # too small raises for all alike
        return found.labels, []

    def decode(file):
        try:
            return shape_image(open_image(file.read()), shape), None
        except SkipImage as why:
            return None, str(why)
        except OSError as err:
            return None, f"cannot be read ({err.strerror or err})"

    skipped, kept_labels = [], []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:  # Pillow decodes without the GIL
        results = pool.map(decode, found.files, chunksize=64)
        for file, (array, why) in tqdm(zip(found.files, results, strict=True), total=len(found.files),
                                       desc=f"preparing {what}", unit="img", disable=not progress):
            if array is None:
                skipped.append((file.name, why))
                continue
            out[len(kept_labels)] = array
            kept_labels.append(file.label)
    labels = np.array(kept_labels, dtype=np.int64) if found.labelled else None
    return labels, skipped


def write_prepared(found: SourceImages, stem: Path, shape: Shape, description: dict, progress: bool = True) -> dict:
    """Decode and shape everything `found` holds into the prepared files at `stem`; return the manifest."""
    started = time.perf_counter()
    images_path, labels_path, manifest_path = paths_of(stem)
    total = len(found.array) if found.array is not None else len(found.files)
    if total == 0:
        raise UserError(f"{description['source']} holds no images.")
    if found.array is not None and min(found.array.shape[1:3]) < shape.size:
        raise UserError(f"the images in {description['source']} are {found.array.shape[2]}x{found.array.shape[1]}, "
                        f"smaller than the requested {shape.size} pixels; lower --data.image_size.")
    # All three files are written under temporary names and renamed only when all are complete, the
    # manifest last: a failure leaves an older preparation at this name as it was.
    with ExitStack() as commit:
        tmp_manifest = commit.enter_context(atomic_file(manifest_path))
        tmp_labels = commit.enter_context(atomic_file(labels_path))
        tmp_images = commit.enter_context(atomic_file(images_path))
        labels, skipped, kept = _write_images(found, shape, tmp_images, total, progress, description["source"])
        digest = _sha256(tmp_images, labels)
        if labels is not None:
            with open(tmp_labels, "wb") as f:
                np.save(f, labels)
        class_counts = np.bincount(labels, minlength=len(found.class_names)).tolist() if labels is not None else None
        manifest = {
            "format": MANIFEST_FORMAT, "version": VERSION, **description,
            "count": kept, "image_shape": [shape.channels, shape.size, shape.size], "layout": "NHWC",
            "class_names": list(found.class_names), "class_counts": class_counts,
            "images": images_path.name, "labels": labels_path.name if labels is not None else None,
            "sha256": digest, "alpha_background": "black" if shape.alpha_background == (0, 0, 0) else "white",
            "skipped_count": len(skipped), "skipped": [list(s) for s in skipped[:200]], "hidden_count": found.hidden,
            "prepare_seconds": round(time.perf_counter() - started + description.get("read_seconds", 0.0), 2),
        }
        tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    if labels is None:
        labels_path.unlink(missing_ok=True)  # the (empty) temporary renamed into place, or an older one's labels
    return manifest


def _write_images(found: SourceImages, shape: Shape, out: Path, total: int, progress: bool, what: str):
    """Shape every image into the .npy at `out`; return (labels, skipped, how many were kept)."""
    everything = out.with_name(out.name + ".all")  # room for all; skipped images leave rows unused at the end
    try:
        full = np.lib.format.open_memmap(everything, mode="w+", dtype=np.uint8,
                                         shape=(total, shape.size, shape.size, shape.channels))
        labels, skipped = _shape_all(found, shape, full, progress, what)
        kept = total - len(skipped)
        skipped = found.skipped + skipped
        if kept == 0:
            reasons = "; ".join(f"{name} {why}" for name, why in skipped[:3])
            which = "the only file" if len(skipped) == 1 else f"none of the {len(skipped):,} files"
            verdict = "is not an image" if len(skipped) == 1 else "is an image"
            raise UserError(f"{which} in {what} {verdict} that can be used ({reasons}).")
        if kept == total:
            full.flush()
            del full
            os.replace(everything, out)
        else:
            compact = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(kept, *full.shape[1:]))
            for start in range(0, kept, 4096):
                compact[start:start + 4096] = full[start:min(kept, start + 4096)]
            compact.flush()
            del compact, full
    finally:
        everything.unlink(missing_ok=True)
    return labels, skipped, kept


def _sha256(images_path: Path, labels: np.ndarray | None) -> str:
    digest = hashlib.sha256()
    with open(images_path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    if labels is not None:
        digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()


def summary(manifest: dict) -> str:
    """One line: what was prepared, and what was skipped and why (the first few by name)."""
    c, h, w = manifest["image_shape"]
    classes = f", {words.count(len(manifest['class_names']), 'class')}" if manifest["class_names"] else ", unlabelled"
    line = (f"prepared {words.count(manifest['count'], 'image')} of {w}x{h}x{c}{classes} from "
            f"{manifest['source']} in {manifest['prepare_seconds']:.1f} s")
    if manifest["skipped_count"]:
        examples = "; ".join(f"{name} {why}" for name, why in manifest["skipped"][:5])
        more = f"; and {manifest['skipped_count'] - 5:,} more" if manifest["skipped_count"] > 5 else ""
        line += (f"; skipped {words.count(manifest['skipped_count'], 'file')}: {examples}"
                 f"{more} (all listed in the manifest)")
    if manifest.get("hidden_count"):
        line += f"; left out {words.count(manifest['hidden_count'], 'hidden or system item')}"
    return line


# --- reading one -----------------------------------------------------------------------------

def open_prepared(path: Path, memory_limit: int | None = None) -> Prepared:
    """Open a prepared dataset by its .npy path; refuse one that is damaged or incomplete."""
    images_path, _, manifest_path = paths_of(path)
    try:
        manifest = json.loads(read_manifest(manifest_path))
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("version"), int):
            raise ValueError("not a tinydiffusion manifest")
        if manifest["version"] > VERSION:
            raise UserError(f"{manifest_path} was written by a newer tinydiffusion; upgrade to read it.")
        count, (c, h, w) = int(manifest["count"]), manifest["image_shape"]
        labels_name = manifest.get("labels")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{manifest_path} is not a readable prepared-data manifest ({err}).") from None
    try:
        images = np.load(images_path, mmap_mode="c", allow_pickle=False)
        labels = np.load(images_path.with_name(labels_name), allow_pickle=False) if labels_name else None
    except (OSError, ValueError) as err:
        raise UserError(f"the prepared data beside {manifest_path} cannot be read ({err}); prepare it again.") from None
    if images.dtype != np.uint8 or images.shape != (count, h, w, c) or \
            (labels is not None and (labels.shape != (count,) or labels.dtype != np.int64)):
        raise UserError(f"the prepared data beside {manifest_path} does not match its manifest; prepare it again.")
    memory_mapped = images.nbytes > (default_memory_limit() if memory_limit is None else memory_limit)
    if not memory_mapped:
        images = np.array(images)  # read it all in: gathers from memory are faster than page faults
    return Prepared(images, labels, manifest, memory_mapped)
