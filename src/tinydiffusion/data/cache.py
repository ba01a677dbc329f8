"""The prepared-data cache (docs/how-to/own-images.md): one folder per source, split and requested shape, named
`<source>-<split>-<key of source, split and shape>-<key of the files' fingerprint>`, so that a changed source's new
entry replaces its old one (remove_older) instead of piling up beside it. `tinydiffusion cache [--clear]`.

The cache may be any folder, one of the user's (TINYDIFFUSION_CACHE=~, or even /), so what is listed and removed is
only what tinydiffusion recognisably wrote in `prepared/`, `latents/` (latents.py) and `evaluation/`: entries whose
names it gives and whose files are all files it writes. Everything else is left and said to be left, and no link
below the cache folder is ever followed or removed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .. import words
from ..errors import UserError
from ..files import atomic_directory, cache_dir, exclusive_lock, read_regular_file
from .named import NAMED

ENTRY = re.compile(r".+-[A-Za-z0-9_]+-[0-9a-f]{12}-[0-9a-f]{12}")  # entry_path's names
ARTEFACTS = re.compile(r"[0-9a-f]{16}|unknown")  # evaluation/<a prepared file's sha256>: evaluation/reference.py
FILES = re.compile(r"data\.npy|data\.labels\.npy|data\.json"  # prepared.py's, latents.py's, the evaluation's
                   r"|latents\.npy|latents\.json"
                   r"|classifier-[0-9a-f]+\.(safetensors|json)|fd-reference-[0-9a-f]+\.npz|fd-floor-[0-9a-f]+\.json")
TEMPORARY = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # files.atomic_file's and atomic_directory's names
MOST_ENTRIES = 10_000  # looked at in prepared/ or evaluation/: a user's folder of that name may be huge
MOST_FILES = 100  # in one entry (it holds a dozen): a folder with more is not one
MOST_WALKED = 100_000  # files and folders a listing sizes in a part it only measures (downloads)
MOST_NAMED = 5  # entries named in the one line that says what was left
T = TypeVar("T")
MANIFEST_BYTES = 256 << 20  # a data.json lists every skipped file: far more than any folder's list takes


def prepared_root() -> Path:
    return cache_dir() / "prepared"


def latents_root() -> Path:
    return cache_dir() / "latents"


def entry_path(root: Path, source: str, kind: str, key: str, version: str) -> Path:
    """root/<source's name, made safe>-<kind>-<key>-<version> (ENTRY): remove_older removes the other versions."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source)[:40] or "data"
    return root / f"{slug}-{kind}-{key[:12]}-{version[:12]}"


@dataclass
class Found:
    """An entry tinydiffusion wrote: a folder and its files, or one file (a lock)."""
    kind: str  # "prepared", "latents", "unfinished" (a preparation's temporary folder), "evaluation" or "lock"
    path: Path
    files: list[Path]
    size: int
    mtime: float


@dataclass
class Survey:
    ours: list[Found] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # what else is in prepared/ and evaluation/, relative to the cache
    notes: list[str] = field(default_factory=list)  # one sentence each: a part that could not be read whole


def _is_ours(name: str) -> bool:
    temporary = TEMPORARY.fullmatch(name)
    return bool(FILES.fullmatch(temporary.group(1) if temporary else name))


def _folder(kind: str, item: os.DirEntry) -> Found | None:
    """The entry `item` names if it is a real folder (not a link) holding only regular files of names tinydiffusion
    writes; None if it is anything else. OSError if it cannot be read."""
    if not item.is_dir(follow_symlinks=False):
        return None
    files, size = [], 0
    with os.scandir(item.path) as inside:
        for file in itertools.islice(inside, MOST_FILES + 1):
            if len(files) == MOST_FILES or not file.is_file(follow_symlinks=False) or not _is_ours(file.name):
                return None
            files.append(Path(file.path))
            size += file.stat(follow_symlinks=False).st_size
    return Found(kind, Path(item.path), files, size, item.stat(follow_symlinks=False).st_mtime)


def _prepared_entry(item: os.DirEntry, kind: str = "prepared") -> Found | None:
    temporary = TEMPORARY.fullmatch(item.name)
    name = temporary.group(1) if temporary else item.name
    if not temporary and name.endswith(".lock") and ENTRY.fullmatch(name[:-5]) and item.is_file(follow_symlinks=False):
        return Found("lock", Path(item.path), [Path(item.path)], item.stat(follow_symlinks=False).st_size, 0.0)
    return _folder("unfinished" if temporary else kind, item) if ENTRY.fullmatch(name) else None


def _real_folder(path: Path) -> bool:
    """A folder, not a link to one (nor anything else)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _shown(name: str) -> str:
    return name if name.isprintable() else ascii(name)  # a newline in a name must not break a line


def _scan(survey: Survey, name: str, recognise) -> None:
    part = cache_dir() / name
    if not os.path.lexists(part):
        return
    if not _real_folder(part):  # a link (or a file) where the folder goes: what it names is not ours
        survey.left.append(name)
        return
    try:
        with os.scandir(part) as listing:
            items = sorted(itertools.islice(listing, MOST_ENTRIES + 1), key=lambda item: item.name)
    except OSError as err:
        survey.notes.append(f"{part} cannot be read ({err.strerror or err}); skipped.")
        return
    if len(items) > MOST_ENTRIES:
        survey.notes.append(f"{part} holds more than {MOST_ENTRIES:,} entries; only {MOST_ENTRIES:,} were looked at.")
    for item in items[:MOST_ENTRIES]:
        try:
            found = recognise(item)
        except OSError as err:
            survey.left.append(f"{name}/{_shown(item.name)} (cannot be read: {err.strerror or err})")
            continue
        if found is None:
            survey.left.append(f"{name}/{_shown(item.name)}")
        else:
            survey.ours.append(found)


def survey() -> Survey:
    """What tinydiffusion wrote in the cache's prepared/, latents/ and evaluation/, and what else is there."""
    found = Survey()
    _scan(found, "prepared", _prepared_entry)
    _scan(found, "latents", lambda item: _prepared_entry(item, "latents"))
    _scan(found, "evaluation", lambda item: _folder("evaluation", item) if ARTEFACTS.fullmatch(item.name) else None)
    return found


def _remove(found: Found) -> None:
    """Remove the files `found` holds, then its folder (unlink removes a link itself, never what it names; rmdir
    refuses a folder that something was put in meanwhile)."""
    for file in found.files:
        file.unlink(missing_ok=True)
    if found.kind != "lock":
        found.path.rmdir()


def cached(entry: Path, marker: str, fill: Callable[[Path], None], check: Callable[[Path], T], what: str) -> T:
    """`check(entry)` of the cache folder `entry`, which `fill(folder)` writes first, whole (files.atomic_directory),
    unless it holds `marker`: under a lock beside it, so that one process writes it and the others then reuse it. An
    entry that `check` finds damaged (it raises) is removed and written once more; an OSError is one sentence, that
    `what` ("latents") cannot be written to the cache."""
    try:
        with exclusive_lock(entry.with_name(entry.name + ".lock")):
            for attempt in range(2):
                if not (entry / marker).is_file():
                    with atomic_directory(entry) as folder:
                        fill(folder)
                try:
                    return check(entry)
                except (OSError, ValueError, KeyError, TypeError, UserError):
                    if attempt:
                        raise
                    shutil.rmtree(entry, ignore_errors=True)
    except OSError as err:
        raise UserError(f"cannot write {what} to the cache {entry.parent} ({err.strerror or err}); "
                        "set TINYDIFFUSION_CACHE to a writable folder.") from None


def remove_older(entry: Path) -> None:
    """Remove the entries of the same source, split and shape as `entry` that an older version of the files made."""
    line = entry.name.rsplit("-", 1)[0]
    for other in os.scandir(entry.parent):
        if other.name != entry.name and other.name.rsplit("-", 1)[0] == line:
            with suppress(OSError):  # kept: the next clear names it
                found = _prepared_entry(other)
                if found is not None and found.kind == "prepared":
                    _remove(found)
                    Path(other.path + ".lock").unlink(missing_ok=True)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def _walk_size(folder: Path) -> tuple[int, bool]:
    """The bytes of the files below `folder`, never following a link and skipping what cannot be read, and whether
    all were counted: the walk stops after MOST_WALKED entries."""
    size, seen, folders = 0, 0, [folder]
    while folders:
        try:
            with os.scandir(folders.pop()) as items:
                for item in items:
                    seen += 1
                    if seen > MOST_WALKED:
                        return size, False
                    if item.is_dir(follow_symlinks=False):
                        folders.append(Path(item.path))
                    elif item.is_file(follow_symlinks=False):
                        size += item.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return size, True


def _describe(entry: Found) -> str:
    what = "unfinished (a preparation still going, or one stopped)"
    if entry.kind != "unfinished":
        latents = entry.kind == "latents"
        try:
            name = "latents.json" if latents else "data.json"
            meta = json.loads(read_regular_file(entry.path / name, MANIFEST_BYTES))
            count = words.count(int(meta["count"]), "image")
            if latents:
                shape = "x".join(map(str, meta["shape"]))
                what = f"{meta['source']}: {count} encoded by {meta['autoencoder']} to {shape}"
            else:
                c, h, w = meta["image_shape"]
                what = f"{meta['source']} ({meta['split']}), {count} of {w}x{h}x{c}"
        except (OSError, ValueError, KeyError, TypeError):  # NotAFile is an OSError
            what = f"incomplete or damaged ({'encoded' if latents else 'prepared'} again when needed)"
    used = time.strftime("%Y-%m-%d", time.localtime(entry.mtime))
    return f"  {_megabytes(entry.size):>10}  {used}  {_shown(entry.path.name)}: {_shown(what)}"


def _left(left: list[str]) -> str:
    named = ", ".join(left[:MOST_NAMED]) + (f" and {len(left) - MOST_NAMED:,} more" if len(left) > MOST_NAMED else "")
    return f"{len(left):,} {'entry' if len(left) == 1 else 'entries'} in {cache_dir()} that tinydiffusion did not " \
        f"write: {named}."


def report() -> str:
    """Every prepared entry with its size, then the size of each other part of the cache: what tinydiffusion wrote
    there, found without following links or looking anywhere else."""
    found = survey()
    total = sum(f.size for f in found.ours)
    prepared, latents, evaluation = ([f for f in found.ours if f.kind in kinds]
                                     for kinds in (("prepared", "unfinished"), ("latents",), ("evaluation",)))
    lines = [f"cache: {cache_dir()}", f"prepared data ({words.count(len(prepared), 'folder')}):",
             *map(_describe, prepared)]
    if latents:
        lines += [f"latents ({words.count(len(latents), 'folder')}):", *map(_describe, latents)]
    if evaluation:
        lines.append(f"evaluation: {_megabytes(sum(f.size for f in evaluation))}")
    datasets = cache_dir() / "datasets"  # downloads, measured only in the folders the commands download to
    measured = {"datasets": [datasets / name for name in NAMED] if _real_folder(datasets) else [],
                "onnxruntime-web": [cache_dir() / "onnxruntime-web"]}
    for name, folders in measured.items():
        sizes = [_walk_size(folder) for folder in folders if _real_folder(folder)]
        if sizes:
            size = sum(size for size, _ in sizes)
            total += size
            lines.append(f"{name}: {'' if all(whole for _, whole in sizes) else 'more than '}{_megabytes(size)}")
    lines.append(f"total {_megabytes(total)}")
    if found.left:
        lines.append(f"not listed, and kept by --clear: {_left(found.left)}")
    return "\n".join(lines + found.notes)


def clear() -> str:
    """Remove the prepared data and what was derived from it (classifiers, statistics); keep downloads and anything
    tinydiffusion did not write."""
    found = survey()
    freed, left, emptied = 0, found.left, set()
    for entry in found.ours:
        try:
            _remove(entry)
        except OSError as err:
            left.append(f"{entry.path.relative_to(cache_dir())} (cannot be removed: {err.strerror or err})")
            continue
        freed += entry.size
        emptied.add(entry.path.parent)
    for part in emptied:  # only a part this emptied; one that holds anything else stays
        with suppress(OSError):
            part.rmdir()
    kept = cache_dir() / "datasets"
    note = f"; downloaded datasets are kept in {kept} (delete it to remove them)" if _real_folder(kept) else ""
    lines = [f"removed {_megabytes(freed)} of prepared data from {cache_dir()}{note}."]
    return "\n".join(lines + ([f"left {_left(left)}"] if left else []) + found.notes)


def run(clear_it: bool) -> int:
    """`tinydiffusion cache [--clear]`."""
    print(clear() if clear_it else report())
    return 0
