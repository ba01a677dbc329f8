"""The prepared-data cache: one folder per source, split and requested shape, of which only the newest is kept.

An entry's name is `<source>-<split>-<key of source, split and shape>-<key of the files' fingerprint>`: when a
source changes, its new entry shares the first three parts with the old one, which is then removed, so editing a
folder of 60,000 images ten times leaves one prepared copy, not ten. `tinydiffusion cache` lists the entries and
their sizes, and `--clear` removes them (downloaded datasets are kept).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .. import words
from ..files import cache_dir

DERIVED = ("prepared", "evaluation")  # rebuilt when needed; "datasets" (downloads) is not cleared


def prepared_root() -> Path:
    return cache_dir() / "prepared"


def entry_path(slug: str, split: str, source_key: str, files_key: str) -> Path:
    return prepared_root() / f"{slug}-{split}-{source_key[:12]}-{files_key[:12]}"


def remove_older(entry: Path) -> None:
    """Remove the entries of the same source, split and shape as `entry` that an older version of the files made."""
    line = entry.name.rsplit("-", 1)[0] + "-"
    for other in entry.parent.glob(f"{line}*"):
        if other.name != entry.name and other.name.rsplit("-", 1)[0] + "-" == line and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
            other.with_name(other.name + ".lock").unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _describe(entry: Path) -> str:
    try:
        manifest = json.loads((entry / "data.json").read_text())
        c, h, w = manifest["image_shape"]
        what = (f"{manifest['source']} ({manifest['split']}), {words.count(int(manifest['count']), 'image')} of "
                f"{w}x{h}x{c}")
    except (OSError, ValueError, KeyError, TypeError):
        what = "incomplete or damaged (prepared again when needed)"
    used = time.strftime("%Y-%m-%d", time.localtime(entry.stat().st_mtime))
    return f"  {_megabytes(_size(entry)):>10}  {used}  {entry.name}: {what}"


def report() -> str:
    """Every prepared entry with its size, then each other part of the cache with its size."""
    root = cache_dir()
    entries = sorted(p for p in prepared_root().iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if prepared_root().is_dir() else []
    lines = [f"cache: {root}"]
    lines += [f"prepared data ({words.count(len(entries), 'folder')}):"] + [_describe(e) for e in entries]
    for part in sorted(root.iterdir()) if root.is_dir() else []:
        if part.name != "prepared" and part.is_dir():
            lines.append(f"{part.name}: {_megabytes(_size(part))}")
    lines.append(f"total {_megabytes(_size(root) if root.is_dir() else 0)}")
    return "\n".join(lines)


def clear() -> str:
    """Remove the prepared data and what was derived from it (classifiers, statistics); keep downloads."""
    freed = 0
    for name in DERIVED:
        part = cache_dir() / name
        if part.is_dir():
            freed += _size(part)
            shutil.rmtree(part, ignore_errors=True)
    kept = cache_dir() / "datasets"
    note = f"; downloaded datasets are kept in {kept} (delete it to remove them)" if kept.is_dir() else ""
    return f"removed {_megabytes(freed)} of prepared data from {cache_dir()}{note}."


def run(clear_it: bool) -> int:
    """`tinydiffusion cache [--clear]`."""
    print(clear() if clear_it else report())
    return 0
