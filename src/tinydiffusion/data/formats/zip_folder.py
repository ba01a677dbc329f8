"""A .zip of an image folder, read member by member without extracting it."""

from __future__ import annotations

import stat
import threading
import zipfile
import zlib
from functools import partial
from pathlib import Path

from ...errors import UserError
from ..images import MAX_FILE_BYTES, SkipImage
from .base import SourceImages, assign_classes, image_extensions, is_hidden, stat_fingerprint

SPLITS_INSIDE = False  # a held-out split is a sibling source (test/ beside train/)
NAME = "zip of an image folder"
fingerprint = stat_fingerprint


def claims(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def _unsafe(name: str) -> bool:
    """A name an extraction tool would refuse: absolute ("/x", "C:x") or climbing out ("../x")."""
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in name.split("/")


def read(path: Path, split: str) -> SourceImages | None:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{path} is not a readable zip archive ({err}).") from None
    extensions, skipped, usable, folders, hidden, encrypted = image_extensions(), [], {}, set(), 0, 0
    for m in archive.infolist():
        parts = [part for part in m.filename.split("/") if part not in ("", ".")]  # "./a//b.png" is a/b.png
        name = "/".join(parts)
        if _unsafe(m.filename):
            skipped.append((m.filename, "has an unsafe name (absolute, or climbing out with ..)"))
            continue
        if any(is_hidden(part) for part in parts):  # __MACOSX/ (Finder's resource forks), .DS_Store, ...
            hidden += 1
            continue
        folders.update("/".join(parts[:i]) for i in range(1, len(parts) + m.is_dir()))
        if m.is_dir():
            continue
        if stat.S_ISLNK(m.external_attr >> 16):
            skipped.append((name, "is a symbolic link, not a file"))
        elif Path(name).suffix.lower() not in extensions:
            skipped.append((name, "is not an image file"))
        elif m.flag_bits & 0x1:
            encrypted += 1
            skipped.append((name, "is encrypted"))
        elif m.file_size > MAX_FILE_BYTES:
            skipped.append((name, f"is {m.file_size:,} bytes uncompressed, too large for an image"))
        else:
            usable[name] = m
    if encrypted and not usable:
        raise UserError(f"{path} is encrypted (its images need a password); unzip it and give the folder instead.")
    lock = threading.Lock()  # one ZipFile is shared by the decoding threads

    def read_member(member: zipfile.ZipInfo) -> bytes:
        try:
            with lock:
                return archive.read(member)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as err:
            # a bad CRC, a damaged stream, or a compression method zipfile lacks (Deflate64): skipped
            raise SkipImage(f"cannot be read from {path.name} ({err})") from None

    return assign_classes({name: partial(read_member, m) for name, m in usable.items()}, path, folders, skipped, hidden)
