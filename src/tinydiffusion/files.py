"""Files: atomic writes and the one cache folder every command shares.

Nothing here knows about models or images; checkpoints, figures, prepared datasets and downloads
all write through these so that a crash never leaves half a file under a real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: no locks, and atomic renames still keep every file whole
    fcntl = None

# tempfile makes private files (0600) and folders (0700); what this module renames into place gets the modes the
# user's umask gives any other file (0644 and 0755 with the usual 022). Reading the umask means setting it (and back):
# done once, at import, before a program starts threads, which would give a file made in between the wrong mode.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE, DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def use_umask(path: Path) -> None:
    """Give a file or folder made by tempfile the mode the user's umask gives new files and folders."""
    os.chmod(path, DIR_MODE if Path(path).is_dir() else FILE_MODE)


def cache_dir() -> Path:
    """$TINYDIFFUSION_CACHE, else $XDG_CACHE_HOME/tinydiffusion, else ~/.cache/tinydiffusion: where downloaded
    datasets, prepared arrays, domain classifiers and FD statistics live."""
    if os.environ.get("TINYDIFFUSION_CACHE"):
        return Path(os.environ["TINYDIFFUSION_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinydiffusion"


class NotAFile(OSError):
    """What a path names is not a regular file (a named pipe, a device, a socket, a folder), or is larger than
    the reader allows: reading it could block for ever or never end. `strerror` says which, as in "is a socket"."""


_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def not_a_file(mode: int) -> str:
    """'' for a regular file, else what it is ("a named pipe", "a device", ...)."""
    return "" if stat.S_ISREG(mode) else next((what for test, what in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; NotAFile for anything else.

    Opened without blocking (a named pipe with no writer would wait for ever) and checked on the open
    descriptor, so a link swapped after a check still cannot make this read a device: /dev/zero is endless."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    st = os.fstat(fd)
    if kind := not_a_file(st.st_mode):  # asked before fdopen, which refuses a folder without saying so
        os.close(fd)
        raise NotAFile(0, f"is {kind}, not a file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > max_bytes:
            raise NotAFile(0, f"is {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
        payload = f.read(max_bytes + 1)  # a file that grows while it is read stops here
    if len(payload) > max_bytes:
        raise NotAFile(0, f"is more than the {max_bytes:,} bytes allowed")
    return payload


def read_file(path: Path, max_bytes: int, subject: str, then: str) -> bytes:
    """read_regular_file, or one sentence (UserError) saying why not: "{subject} {why}; {then}." where `why` is
    "does not exist", "is a named pipe, not a file", "is 9,000 bytes, more than the 4,096 allowed" or "cannot be
    read (Permission denied)"."""
    try:
        return read_regular_file(path, max_bytes)
    except OSError as err:
        why = ("does not exist" if isinstance(err, FileNotFoundError) else err.strerror if isinstance(err, NotAFile)
               else f"cannot be read ({err.strerror or err})")
        raise UserError(f"{subject} {why}; {then}.") from None


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(payload)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write (by any means); on success it is fsynced and renamed
    over `path`, on failure removed. For outputs too large to hold in memory as one bytes object."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        use_umask(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def atomic_directory(path: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path` to fill; on success it is renamed to `path`, on failure removed.
    For content named by its key (caches): when another process finished the same folder first, its copy is kept.
    With `replace` (a checkpoint saved again after a resume), an existing folder is moved aside first, so a crash
    leaves the old or the new folder under `path`, and a hidden `.old-` copy at worst; a link is written through
    (moved aside, it would become a folder of its own and leave its target and an `.old-` link behind)."""
    path = Path(path)
    if replace and path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):  # subfolders too (an exported diffusers folder has them)
            use_umask(f)  # safetensors writes 0600 and mkdtemp makes 0700: the folder is as readable as any file
            if f.is_dir():
                fsync_dir(f)
                continue
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
        use_umask(tmp)
        fsync_dir(tmp)
        if replace and path.exists():
            old = path.parent / f".old-{path.name}"
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                tmp.rename(path)
            except OSError:  # the folder exists (and is not empty): another process made it
                if not path.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


# --- folders an export writes (docs/how-to/export.md#exporting-again-into-the-same-folder) ------------------------
#
# The marker, JSON in the folder, lists every file the export wrote by its path there, with its SHA-256. The files are
# replaced in place, one rename each, so the folder itself stays; while they are being renamed, the marker lists the
# old files, the new ones and the staging folder that holds the rest, so a folder left by an export killed there is
# still recognised by the next one.

EXPORT_STAGING = ".tinydiffusion-staging-"  # the staging folder, inside the export's folder
MAX_MARKER_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _listed(marker: dict) -> dict[str, set[str]]:
    """Each path a marker lets an export replace, with the SHA-256s it may hold (an interrupted export's: its old
    one or its new one)."""
    allowed: dict[str, set[str]] = {}
    files, old, staging = marker.get("files"), marker.get("replacing", {}), marker.get("staging")
    if not (isinstance(files, dict) and isinstance(old, dict)):
        return {}
    listed = [*files.items(), *old.items()]
    if isinstance(staging, str) and staging.startswith(EXPORT_STAGING) and "/" not in staging:
        listed += [(f"{staging}/{name}", sha) for name, sha in files.items()]  # the files not yet renamed
    for name, sha in listed:
        if isinstance(sha, str):
            allowed.setdefault(name, set()).add(sha)
    return allowed


def _entries(folder: Path, relative: str = "") -> Iterator[tuple[str, os.DirEntry]]:
    """Every entry under `folder` by its relative path, parents first, links not followed; lazily, so that a refusal
    at a folder does not walk it."""
    with os.scandir(folder / relative) as found:
        entries = sorted(found, key=lambda entry: entry.name)
    for entry in entries:
        name = f"{relative}/{entry.name}" if relative else entry.name
        yield name, entry
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(folder, name)


def export_folder_files(folder: Path, marker: str, label: str = "") -> tuple[dict[str, str], list[str]]:
    """The files (by relative path, with their SHA-256) and subfolders an earlier export wrote in `folder`: all it
    holds but its marker; nothing for a new or empty folder. Anything else there, a link or a listed file changed
    since included, is refused in one sentence (UserError, `label` before the folder's name)."""
    folder = Path(folder)
    subject = f"{label} {folder}" if label else str(folder)
    if folder.is_symlink() and not folder.exists():
        raise UserError(f"{subject} is a link to {os.readlink(folder)}, which does not exist; give a folder that does.")
    if not folder.exists():
        return {}, []
    if not folder.is_dir():
        raise UserError(f"{subject} is a file; give a folder name.")
    try:
        payload = read_regular_file(folder / marker, MAX_MARKER_BYTES) if (folder / marker).is_file() else None
        found = json.loads(payload) if payload is not None else None
    except (OSError, ValueError):  # unreadable, or not JSON (UnicodeDecodeError is a ValueError)
        found = {}
    if found is None and next(_entries(folder), None) is not None:
        raise UserError(f"{subject} is a folder that an export did not write; give a new or empty folder.")
    allowed = _listed(found) if isinstance(found, dict) else {}
    if found is not None and not allowed:
        raise UserError(f"{subject} holds a {marker} that lists no files with their SHA-256 (an older tinydiffusion's "
                        f"export, or not an export's), so none of its files can be told to be the export's; delete "
                        f"the folder or give a new or empty one.")
    parents = {str(parent) for name in allowed for parent in Path(name).parents if str(parent) != "."}
    files, folders = {}, []
    for name, entry in _entries(folder):
        if name == marker and entry.is_file(follow_symlinks=False):
            continue
        if entry.is_dir(follow_symlinks=False) and name in parents:
            folders.append(name)
            continue
        if name not in allowed or not entry.is_file(follow_symlinks=False):
            raise UserError(f"{subject} holds {name}, which its export did not write; move it out of the folder or "
                            f"give a new or empty one.")
        files[name] = sha256_file(folder / name)
        if files[name] not in allowed[name]:
            raise UserError(f"{subject} holds {name}, changed since its export wrote it; move it out of the folder or "
                            f"give a new or empty one.")
    return files, folders


@contextmanager
def export_directory(folder: Path, marker: str, about: dict) -> Iterator[Path]:
    """Yield an empty staging folder to fill with an export's files; on success they replace the earlier export's in
    `folder` (new, empty, or an export's: export_folder_files refuses any other), the marker listing them beside
    `about` ({"format": ..., ...}). A failure while staging leaves the folder as it was; one while renaming leaves
    old and new files, all listed, for the next export to replace."""
    folder = Path(folder)
    old, old_folders = export_folder_files(folder, marker)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=EXPORT_STAGING, dir=folder))  # inside: renames never cross a mount
    try:
        yield stage
        new = {}
        for path in sorted(stage.rglob("*")):
            use_umask(path)  # safetensors writes 0600: the files are as readable as any the user makes
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
                new[path.relative_to(stage).as_posix()] = sha256_file(path)
        listing = {**about, "files": new}
        atomic_write_bytes(folder / marker, json.dumps({**listing, "replacing": old, "staging": stage.name}).encode())
        for name in new:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, folder / name)
        for name in old.keys() - new.keys():
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(stage)
        for name in sorted(old_folders, key=lambda name: name.count("/"), reverse=True):
            with suppress(OSError):  # still holds the new export's files
                (folder / name).rmdir()
        for name in {".", *(str(Path(name).parent) for name in new)}:
            fsync_dir(folder / name)
        atomic_write_bytes(folder / marker, (json.dumps(listing, indent=1) + "\n").encode())
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            with suppress(OSError):
                folder.rmdir()
        raise


def check_apart(out: Path, inputs: list[Path], label: str = "") -> None:
    """Refuse (UserError) an output folder that is one of `inputs` (what a command reads: a model's files or its
    folder), holds one or lies inside one: writing it would replace what is being read. Links are followed."""
    mine = Path(out).resolve()
    subject = f"{label} {out}" if label else str(out)
    for given in inputs:
        theirs = Path(given).resolve()
        relation = ("is" if mine == theirs else "holds" if mine in theirs.parents else
                    "is inside" if theirs in mine.parents else None)
        if relation:
            raise UserError(f"{subject} {relation} the model being exported ({given}), which the export would "
                            f"replace; give a folder apart from it.")


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing): a second process that asks for the same
    lock waits here until the first is done (e.g. every torchrun process preparing the same dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# --- one writer per run directory (docs/reference/run-directory.md#one-writer-per-run) ----------------------------
#
# A run holds an exclusive flock on RUN/.lock for its whole life, its pid and host written inside; the kernel drops
# it when the process dies. The file itself stays (deleting a lock file another process may be opening would let two
# processes hold "the" lock), and its text counts only while it is locked.

RUN_LOCK = ".lock"
_LOCK_PATIENCE_S = 0.5  # how long a moment's contention (another process's probe) is waited out


class RunInUse(UserError):
    """Another live process is writing to the run directory."""

    def __init__(self, run_dir: Path, holder: str):
        super().__init__(f"{run_dir} is in use by another tinydiffusion process ({holder}); "
                         "wait for it to finish or stop it first.")


def _flock_or_holder(handle, mode: int, run_dir: Path) -> bool:
    """Take `mode` (LOCK_SH or LOCK_EX) on `handle` without blocking: True, or False on a filesystem without flock
    (ENOLCK); RunInUse naming the holder if another process holds it. A conflict is retried for a moment before it
    counts: it may be another process's probe, which lets go at once (while the file may still name a process killed
    earlier), and a process that has only just taken the lock writes its pid a moment later."""
    deadline = time.monotonic() + _LOCK_PATIENCE_S
    while True:
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.seek(0)
                holder = " ".join(handle.read(200).split())  # one line, whatever the file holds
                raise RunInUse(run_dir, holder or "pid unknown") from None
            time.sleep(0.02)
        except OSError:
            return False


def check_run_not_in_use(run_dir: Path) -> None:
    """Refuse (RunInUse) a run directory that a live process holds; creates and changes nothing, so it can
    be asked before any work. Holding the lock is run_lock's job; this only asks."""
    if fcntl is None:
        return
    try:
        handle = open(Path(run_dir) / RUN_LOCK, errors="replace")
    except OSError:  # no lock file: nobody holds it (or it cannot be read: run_lock will say why)
        return
    with handle:  # closing the file lets go of the shared lock taken to ask
        _flock_or_holder(handle, fcntl.LOCK_SH, Path(run_dir))


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/.lock exclusively for the block (creating the folder); RunInUse if a live process holds it."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # "a+", not "w": the file is emptied only once held, since its text names the holder
        handle = open(run_dir / RUN_LOCK, "a+", errors="replace")
    except OSError as err:
        raise UserError(f"cannot write to the run directory {run_dir} ({err.strerror or err}).") from None
    with handle:
        if fcntl is None or not _flock_or_holder(handle, fcntl.LOCK_EX, run_dir):  # no locks here: unguarded
            yield
            return
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
            handle.flush()
            yield
        finally:
            with suppress(OSError):  # never hide the error that ended the run; the text only counts while held
                handle.truncate(0)  # a lock file that is not held names nobody
                handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)  # explicit: a forked worker may hold the file open


def fsync_dir(path: Path) -> None:
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
