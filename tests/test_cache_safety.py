"""`tinydiffusion cache [--clear]` in a cache folder that is also the user's (issue 48): it lists and removes only what
tinydiffusion wrote, never follows a link, never walks outside its own sub-folders, and says what it left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import cli
from PIL import Image
from test_hostile_inputs import capped
from test_sources import load, make_class_folder, save

FLOOR = "fd-floor-0123456789abcdef01234567.json"  # named as the evaluation names its cached statistics


def user_files(cache: Path) -> dict[Path, bytes]:
    """The user's own files in folders of the names the cache uses, one of them an entry's name."""
    files = {cache / "prepared" / "notes.txt": b"my notes", cache / "prepared" / "photos" / "cat.png": b"a photo",
             cache / "evaluation" / "results.csv": b"fd,12.3",
             cache / "evaluation" / "0123456789abcdef" / "mine.txt": b"mine"}
    for path, payload in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return files


def prepare_into_cache(tmp_path: Path, cache: Path, capsys) -> list[str]:
    """A real prepared entry and an evaluation folder; the entries' names in prepared/."""
    make_class_folder(tmp_path / "pets")
    load(tmp_path / "pets")
    (cache / "evaluation" / "fedcba9876543210").mkdir(parents=True)
    (cache / "evaluation" / "fedcba9876543210" / FLOOR).write_text('{"fd": 1.0}')
    capsys.readouterr()  # what preparing printed
    return sorted(p.name for p in (cache / "prepared").iterdir() if p.is_dir())


def left_line(out: str) -> str:
    """The one line that names what was left, from its count on (the listing's and the clear's say the same)."""
    lines = [line for line in out.splitlines() if "that tinydiffusion did not write" in line]
    assert len(lines) == 1, out
    return lines[0][lines[0].index(" entr") - 1:]


def test_clear_removes_only_what_tinydiffusion_wrote_and_says_what_it_left(tmp_path, private_cache, capsys):
    files = user_files(private_cache)
    entries = prepare_into_cache(tmp_path, private_cache, capsys)
    assert len(entries) == 2  # the prepared entry and the user's photos
    code, listing, _ = cli(capsys, "cache")
    assert code == 0 and "prepared data (1 folder):" in listing and "4 images of 8x8x3" in listing
    assert "evaluation: " in listing and "photos" in listing, listing
    code, out, _ = cli(capsys, "cache", "--clear")
    assert code == 0 and out.startswith("removed ") and out.count("\n") == 2, out
    assert left_line(out) == left_line(listing)
    for name in ("prepared/notes.txt", "prepared/photos", "evaluation/results.csv", "evaluation/0123456789abcdef"):
        assert name in left_line(out), out
    for path, payload in files.items():
        assert path.read_bytes() == payload
    assert sorted(p.name for p in (private_cache / "prepared").iterdir()) == ["notes.txt", "photos"]
    assert not (private_cache / "evaluation" / "fedcba9876543210").exists()
    code, out, _ = cli(capsys, "cache")
    assert "prepared data (0 folders):" in out and "total 0.0 MB" in out


def test_clear_of_a_cache_of_its_own_leaves_nothing_and_says_nothing_was_left(tmp_path, private_cache, capsys):
    prepare_into_cache(tmp_path, private_cache, capsys)
    code, out, _ = cli(capsys, "cache", "--clear")
    assert code == 0 and out.count("\n") == 1 and "did not write" not in out, out
    assert sorted(os.listdir(private_cache)) == []  # the parts it emptied go too


def test_links_in_the_cache_are_never_followed_nor_removed(tmp_path, private_cache, capsys):
    """A link where an entry, a file of one or a whole part goes: neither it nor what it names is touched."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    for name in ("data.npy", "data.json", FLOOR):
        (theirs / name).write_text("the user's")
    entries = prepare_into_cache(tmp_path, private_cache, capsys)
    prepared = private_cache / "prepared"
    links = [prepared / "pets-train-0123456789ab-0123456789ab", private_cache / "evaluation" / "0123456789abcdef"]
    for link in links:
        link.symlink_to(theirs)
    (prepared / entries[0] / "data.labels.npy").unlink()  # an entry with a link in it is not one it wrote
    (prepared / entries[0] / "data.labels.npy").symlink_to(theirs / "data.npy")
    (private_cache / "datasets").symlink_to(theirs)
    code, out, _ = cli(capsys, "cache", "--clear")
    assert code == 0 and "3 entries" in out and entries[0] in out, out
    assert all(link.is_symlink() for link in links) and (prepared / entries[0] / "data.npy").is_file()
    assert sorted(os.listdir(theirs)) == sorted(["data.npy", "data.json", FLOOR])
    assert all((theirs / name).read_text() == "the user's" for name in os.listdir(theirs))


def test_a_part_that_is_a_link_is_left(tmp_path, private_cache, capsys):
    theirs = tmp_path / "theirs"
    make_class_folder(tmp_path / "pets")
    load(tmp_path / "pets")
    (private_cache / "prepared").rename(theirs)  # a real entry, but reached through a link: not followed
    (private_cache / "prepared").symlink_to(theirs)
    code, out, _ = cli(capsys, "cache", "--clear")
    assert code == 0 and "left 1 entry in" in out and "did not write: prepared." in out, out
    assert len(list(theirs.iterdir())) == 2  # the entry and its lock


@pytest.mark.parametrize("clear", [False, True])
def test_the_listing_does_not_follow_a_link_into_proc(private_cache, clear):
    """Links to /proc (unreadable entries, files that vanish) where a part, an entry and a download folder go."""
    private_cache.mkdir()
    (private_cache / "proc").symlink_to("/proc")
    (private_cache / "evaluation").symlink_to("/proc")
    (private_cache / "prepared").mkdir()
    (private_cache / "prepared" / "x-train-0123456789ab-0123456789ab").symlink_to("/proc")
    (private_cache / "datasets").mkdir()
    (private_cache / "datasets" / "mnist").symlink_to("/proc")
    done = capped("cache", *(["--clear"] if clear else []))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "2 entries in" in done.stdout and "/proc" not in done.stdout, done.stdout
    assert os.path.islink(private_cache / "prepared" / "x-train-0123456789ab-0123456789ab")


@pytest.mark.parametrize("manifest", ["pipe", "zero"])
def test_a_manifest_that_is_not_a_file_neither_hangs_the_listing_nor_is_removed(tmp_path, private_cache, manifest):
    make_class_folder(tmp_path / "pets")
    load(tmp_path / "pets")
    entry = next(p for p in (private_cache / "prepared").iterdir() if p.is_dir())
    (entry / "data.json").unlink()
    if manifest == "pipe":
        os.mkfifo(entry / "data.json")
    else:
        (entry / "data.json").symlink_to("/dev/zero")
    for args in (["cache"], ["cache", "--clear"]):
        done = capped(*args)
        assert done.returncode == 0 and done.stderr == "" and f"prepared/{entry.name}" in done.stdout, done.stdout
    assert (entry / "data.npy").is_file()


def test_a_large_manifest_that_loading_accepts_is_listed_not_called_damaged(tmp_path, private_cache, capsys):
    """`cache` reads a data.json with the limit loading reads it with: one over 16 MiB (a set that skipped many
    files) is described, as loading it works."""
    entries = prepare_into_cache(tmp_path, private_cache, capsys)
    manifest = next(private_cache / "prepared" / name / "data.json" for name in entries
                    if (private_cache / "prepared" / name / "data.json").is_file())
    manifest.write_bytes(manifest.read_bytes().rstrip() + b" " * (17 << 20) + b"\n")
    assert load(tmp_path / "pets").images.shape[0] == 4
    code, listing, _ = cli(capsys, "cache")
    assert code == 0 and "4 images of 8x8x3" in listing and "damaged" not in listing, listing


def test_a_cache_at_the_root_walks_only_its_own_folders(monkeypatch):
    """TINYDIFFUSION_CACHE=/ lists /prepared, /evaluation and the download folders, if any, and nothing else: at
    once, not the whole disk. (Only listed: a test must not clear /.)"""
    monkeypatch.setenv("TINYDIFFUSION_CACHE", "/")
    done = capped("cache", timeout=20)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("cache: /\nprepared data ("), done.stdout


def test_a_newer_preparation_removes_only_the_older_entry(tmp_path, private_cache):
    """A folder of the user's named as an older entry of the same source is not taken for one."""
    root = tmp_path / "kept"
    make_class_folder(root)
    load(root)
    entry = next(p for p in (private_cache / "prepared").iterdir() if p.is_dir())
    theirs = entry.with_name(entry.name.rsplit("-", 1)[0] + "-ffffffffffff")
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    save(root / "cat" / "new.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    load(root)
    assert not entry.exists() and (theirs / "notes.txt").read_text() == "mine"
