"""Hostile files, folders, archives and arrays (issue 26): special files, endless links, bombs, odd names and
odd layouts are skipped and counted, or refused in one sentence; never a hang, a traceback or all of memory.

Whatever reads a hostile input runs in a subprocess under a memory cap and a timeout, so that a regression fails
the test instead of taking the machine down.
"""

from __future__ import annotations

import io
import os
import resource
import socket
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_error, cli, run_cli
from PIL import Image
from test_sources import load, make_class_folder, refused, save

from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.errors import UserError
from tinydiffusion.files import cache_dir

MEMORY_CAP = 3 << 30


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def capped(*args, timeout: float = 30):
    """`tinydiffusion ARGS` in a subprocess with at most 3 GiB of address space; a hang fails the test."""
    return run_cli(list(args), timeout=timeout, preexec_fn=_cap_memory)


def special_files(folder: Path) -> list[str]:
    """A named pipe, a link to an endless device and a socket in `folder`, named like images."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.png")
    os.symlink("/dev/zero", folder / "zero.png")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(folder / "socket.png"))
    return ["pipe.png", "zero.png", "socket.png"]


# --- special files: skipped in a folder, refused as a picture ----------------------------------

def test_special_files_in_a_folder_are_skipped_and_counted(tmp_path):
    make_class_folder(tmp_path / "pets")
    special_files(tmp_path / "pets" / "cat")
    os.symlink("/", tmp_path / "pets" / "dog" / "root")  # a folder that holds the source: never walked
    out = tmp_path / "pets.npy"
    done = capped("prepare", tmp_path / "pets", "--out", out, "--no-progress")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "prepared 4 images of 8x8x3, 2 classes" in done.stdout
    assert "skipped 4 files" in done.stdout
    for why in ("cat/pipe.png is a named pipe, not a file", "cat/zero.png is a device, not a file",
                "cat/socket.png is a socket, not a file", "dog/root links to a folder that holds the source"):
        assert why in done.stdout, done.stdout


@pytest.mark.parametrize("command,special", [("img2img", "pipe.png"), ("img2img", "zero.png"),
                                             ("inpaint", "zero.png"), ("interpolate", "pipe.png")])
def test_a_special_file_as_a_picture_is_one_sentence(tmp_path, command, special):
    special_files(tmp_path)
    picture = save(tmp_path / "picture.png", Image.new("L", (8, 8), 7))
    out = tmp_path / "out.png"
    out.write_bytes(b"the user's file")
    args = {"img2img": ["--image", tmp_path / special, "--strength", "0.5"],
            "inpaint": ["--image", picture, "--mask", tmp_path / special],
            "interpolate": ["--images", picture, tmp_path / special]}[command]
    done = capped(command, *args, "--out", out)
    flag = {"img2img": "--image", "inpaint": "--mask", "interpolate": "--images"}[command]
    kind = "a named pipe" if special == "pipe.png" else "a device"
    assert_error(done.returncode, done.stderr, f"{flag} {tmp_path / special} is {kind}, not a file")
    assert out.read_bytes() == b"the user's file"


# --- archives and arrays -----------------------------------------------------------------------

def _patch_sizes(archive: Path, member: str, file_size: int, flags: int = 0) -> None:
    """Rewrite a member's declared uncompressed size (and OR in flag bits) in both of the zip's headers."""
    data = bytearray(archive.read_bytes())
    for signature, flag_at, size_at, name_at in ((b"PK\x03\x04", 6, 22, 30), (b"PK\x01\x02", 8, 24, 46)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at:at + name_at + len(member)] == member.encode():
                data[at + size_at:at + size_at + 4] = struct.pack("<I", file_size)
                data[at + flag_at:at + flag_at + 2] = struct.pack("<H", struct.unpack_from("<H", data,
                                                                                     at + flag_at)[0] | flags)
            at = data.find(signature, at + 4)
    archive.write_bytes(bytes(data))


def test_an_npz_that_expands_past_memory_is_one_sentence(tmp_path):
    claimed = MEMORY_CAP * 2 // 3  # fits a zip's 32-bit size, and more than the capped process may hold
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (claimed // 64, 8, 8)})
    archive = tmp_path / "bomb.npz"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", header.getvalue() + bytes(1 << 16))
    _patch_sizes(archive, "images.npy", len(header.getvalue()) + claimed)
    out = tmp_path / "out.npy"
    out.write_bytes(b"untouched")
    done = capped("prepare", archive, "--out", out, "--no-progress")
    assert_error(done.returncode, done.stderr, "images in", "GiB uncompressed, more than the",
                          "save it as an .npy")
    assert out.read_bytes() == b"untouched"


def test_an_encrypted_zip_says_it_is_encrypted(tmp_path):
    make_class_folder(tmp_path / "pets")
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("cat/0.png", "dog/0.png"):
            z.write(tmp_path / "pets" / name, name)
    for name in ("cat/0.png", "dog/0.png"):
        _patch_sizes(archive, name, (tmp_path / "pets" / name).stat().st_size, flags=0x1)
    refused(archive, "is encrypted", "unzip it")


def test_misleading_messages_about_arrays_and_zips(tmp_path):
    (tmp_path / "notes.npy").write_text("a text file, not an array\n")
    message = refused(tmp_path / "notes.npy", "is not a NumPy file")
    assert "pickle" not in message
    with zipfile.ZipFile(tmp_path / "three.zip", "w") as z:
        z.writestr("a.png", b"not a png")
        z.writestr("b.txt", b"text")
        z.writestr("c.txt", b"text")
    refused(tmp_path / "three.zip", "none of the 3 files", "a.png is not an image")


@pytest.mark.parametrize("names,words", [(["cat", "Cat"], "two classes named 'cat' and 'Cat'"),
                                         (["cat", " "], "an empty class name"),
                                         (["cat", "../dog"], "looks like a path"),
                                         (["cat", "a/b"], "looks like a path")])
def test_array_class_names_must_be_distinct_plain_names(tmp_path, names, words):
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 0, 1]),
             class_names=np.array(names))
    refused(tmp_path / "a.npz", "class_names in", words)


@pytest.mark.parametrize("side,words", [(1, ["1 pixel on their shorter side", "smaller than the 4"]),
                                        (2000, ["larger than", "--data.image_size"])])
def test_array_image_sizes_no_network_takes_are_refused_at_prepare(tmp_path, capsys, side, words):
    np.save(tmp_path / "a.npy", np.zeros((2, side, side), np.uint8))
    code, _, err = cli(capsys, "prepare", tmp_path / "a.npy", "--out", tmp_path / "out.npy", "--no-progress")
    assert_error(code, err, *words)
    assert not (tmp_path / "out.npy").exists()


# --- folders and zips read as a person means them ------------------------------------------------

def test_hidden_and_system_entries_are_left_out_and_said(tmp_path, capsys):
    root = tmp_path / "pets"
    make_class_folder(root)
    for name in (".ipynb_checkpoints/0.png", "__MACOSX/cat/0.png", "cat/.hidden.png", "cat/._0.png", "Thumbs.db",
                 ".DS_Store"):
        save(root / name, Image.new("RGB", (8, 8), (9, 9, 9)), format="PNG")
    (root / "bird").mkdir()
    dataset = load(root)
    assert dataset.class_names == ("cat", "dog") and len(dataset) == 4
    out = capsys.readouterr().out
    assert "left out 6 hidden or system items" in out and "skipped" not in out
    assert "warning: 1 class folder of" in out and "holds no image files and is left out: 'bird'" in out


def test_a_file_name_that_is_not_utf8(tmp_path, capsys):
    make_class_folder(tmp_path / "pets")
    with open(os.path.join(os.fsencode(tmp_path / "pets" / "cat"), b"caf\xe9.png"), "wb") as f:
        Image.new("RGB", (8, 8), (1, 2, 3)).save(f, "PNG")
    done = capped("prepare", tmp_path / "pets", "--out", tmp_path / "out.npy", "--no-progress")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "prepared 5 images" in done.stdout
    assert len(load(tmp_path / "pets")) == 5


def test_unsafe_and_linked_zip_members_are_skipped(tmp_path, capsys):
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png, "PNG")
    with zipfile.ZipFile(tmp_path / "pets.zip", "w") as z:
        for name in ("cat/0.png", "dog/0.png", "../../x.png", "/abs/y.png", "cat/../../z.png"):
            z.writestr(name, png.getvalue())
        link = zipfile.ZipInfo("dog/link.png")
        link.external_attr = (0o120777 << 16)
        z.writestr(link, "../../etc/passwd")
    dataset = load(tmp_path / "pets.zip")
    assert dataset.class_names == ("cat", "dog") and len(dataset) == 2
    skipped = dict(dataset.manifest["skipped"])
    assert {n for n, why in skipped.items() if "unsafe name" in why} == {"../../x.png", "/abs/y.png",
                                                                         "cat/../../z.png"}
    assert skipped["dog/link.png"] == "is a symbolic link, not a file"


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, path.relative_to(folder.parent).as_posix())  # under one top folder, as zipping does
    return archive


@pytest.mark.parametrize("layout,classes", [(("cat",), ()), (("pets/cat", "pets/dog"), ("cat", "dog"))])
def test_a_folder_and_a_zip_of_it_are_read_alike(tmp_path, layout, classes):
    for i, name in enumerate(layout):
        make_class_folder(tmp_path / "data", classes=(name,), seed=i)
    as_folder = load(tmp_path / "data")
    as_zip = load(_zip(tmp_path / "data", tmp_path / "data.zip"))
    assert as_folder.class_names == as_zip.class_names == classes
    assert len(as_folder) == len(as_zip) == 2 * len(layout)


def test_class_folders_that_differ_only_in_case_are_refused(tmp_path):
    make_class_folder(tmp_path / "pets", classes=("Cat", "cat"))
    if len(list((tmp_path / "pets").iterdir())) == 2:  # a case-sensitive file system
        refused(tmp_path / "pets", "two classes named 'Cat' and 'cat'")


def test_one_colour_file_does_not_make_a_grey_folder_rgb(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(4):
        save(tmp_path / "digits" / f"{i}.png", Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)))
    save(tmp_path / "digits" / "grey.webp", Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
         .convert("RGB"), quality=80)  # decoded as RGB, its channels 1 apart here and there
    save(tmp_path / "digits" / "stray.png", Image.new("RGB", (8, 8), (200, 10, 10)))
    dataset = load(tmp_path / "digits")
    assert dataset.images.shape == (6, 1, 8, 8)
    assert "note: 1 channel (grey): 1 image of the 6 looked at has colour (stray.png)" in capsys.readouterr().out


def test_a_local_folder_named_like_a_named_dataset_is_pointed_out(tmp_path, capsys, monkeypatch):
    make_class_folder(tmp_path / "mnist")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="not in"):  # not downloaded here: what matters is the note before
        load_data(DataConfig(source="mnist", data_dir=str(tmp_path / "nowhere"), download=False), progress=False)
    assert "note: mnist names the dataset MNIST, not the mnist here; to read that, give --data ./mnist" \
        in capsys.readouterr().out
    assert load(tmp_path / "mnist").class_names == ("cat", "dog")


def test_counts_in_messages_are_singular_for_one(tmp_path, capsys):
    np.savez(tmp_path / "single.npz", images=np.zeros((1, 8, 8), np.uint8), labels=np.zeros(1, np.int64))
    load(tmp_path / "single.npz")
    out = capsys.readouterr().out
    assert "prepared 1 image of 8x8x1, 1 class from" in out and "warning: 1 class of" in out
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.png").write_bytes(b"not a png")
    refused(tmp_path / "one", "the only file in", "is not an image that can be used")


# --- the prepared-data cache ---------------------------------------------------------------------

def test_the_cache_keeps_the_newest_copy_of_a_source_and_can_be_listed_and_cleared(tmp_path, capsys):
    root = tmp_path / "kept"
    make_class_folder(root)

    def entries():
        return sorted(p.name for p in (cache_dir() / "prepared").glob("kept-train-*") if p.is_dir())

    load(root)
    first = entries()
    for i in range(3):  # the source changes three times
        save(root / "cat" / f"new{i}.png", Image.new("RGB", (8, 8), (i, 2, 3)))
        load(root)
    assert len(first) == 1 and len(entries()) == 1 and entries() != first
    load(root, image_size=4)  # another shape is another copy, kept beside
    assert len(entries()) == 2
    code, out, _ = cli(capsys, "cache")
    assert code == 0 and str(root) in out and " MB " in out and "7 images of 8x8x3" in out
    code, out, _ = cli(capsys, "cache", "--clear")
    assert code == 0 and out.startswith("removed ") and entries() == []
