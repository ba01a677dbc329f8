"""Exports never lose the user's files (issue 48): a folder format replaces only the files its marker lists, each as
it was written, and refuses any other folder; it never writes over the model it reads; a linked --out is written
through; the current folder stays the current folder. Every refusal is one sentence with nothing touched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import assert_error, cli
from test_export import tiny_model
from test_export_web import PACKAGED, RUNTIME_STAND_IN, pin, tgz
from test_hostile_inputs import capped

from tinydiffusion.errors import UserError
from tinydiffusion.export import web_page
from tinydiffusion.export.diffusers_folder import write_diffusers
from tinydiffusion.export_formats import EXPORT_MARKER
from tinydiffusion.files import atomic_directory, export_directory, sha256_file
from tinydiffusion.pipeline import load_model

FORMATS = ["web", "diffusers"]


@pytest.fixture
def quick_web(private_cache, monkeypatch):
    """A stand-in for onnxruntime-web's package, pinned and in the cache, so that a web export needs no download, and
    for the graph (what the folder holds is not what these tests are about; test_export_web.py checks it)."""
    monkeypatch.setattr(web_page, "onnx_bytes", lambda model, decoder=None: b"the graph of " +
                        str(model.source).encode())
    package = tgz(PACKAGED)
    pin(monkeypatch, package, RUNTIME_STAND_IN)
    web_page.runtime_tarball().parent.mkdir(parents=True)
    web_page.runtime_tarball().write_bytes(package)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    """Two small models with different weights: an export of the second differs from one of the first."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return [tiny_model(folder / str(seed), seed=seed) for seed in (0, 1)]


def snapshot(folder: Path) -> dict[str, object]:
    """Everything under `folder`: each file's bytes, each link's target, each folder (None)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        found[name] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None
    return found


def export(capsys, fmt: str, checkpoint, out) -> tuple[int, str]:
    code, _, err = cli(capsys, "export", checkpoint, "--format", fmt, "--out", out)
    return code, err


def listed(folder: Path) -> dict[str, str]:
    """The marker's list of files, checked against the folder: exactly its files, each with its SHA-256."""
    files = json.loads((folder / EXPORT_MARKER).read_text())["files"]
    on_disk = {p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == {**files, EXPORT_MARKER: sha256_file(folder / EXPORT_MARKER)}
    return files


# --- 1. only the export's own files ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_re_export_refuses_a_folder_that_holds_the_user_s_files(fmt, checkpoints, quick_web, tmp_path, capsys):
    """A site kept under git: its .git, CNAME and notes/ are the user's, so the folder is refused, not replaced."""
    site = tmp_path / "work" / "site"
    site.parent.mkdir()
    assert export(capsys, fmt, checkpoints[0], site)[0] == 0
    listed(site)
    (site / ".git").mkdir()
    (site / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (site / "CNAME").write_text("example.org\n")
    (site / "notes").mkdir()
    (site / "notes" / "todo.txt").write_text("mine")
    before = snapshot(site)
    assert_error(*export(capsys, fmt, checkpoints[1], site), "holds .git, which its export did not write")
    assert snapshot(site) == before and sorted(p.name for p in site.parent.iterdir()) == ["site"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_re_export_refuses_a_file_changed_since_it_was_written(fmt, checkpoints, quick_web, tmp_path, capsys):
    site = tmp_path / "site"
    assert export(capsys, fmt, checkpoints[0], site)[0] == 0
    changed = "index.html" if fmt == "web" else "model_index.json"
    (site / changed).write_text("edited by hand")
    before = snapshot(site)
    assert_error(*export(capsys, fmt, checkpoints[1], site), f"holds {changed}, changed since its export wrote it")
    assert snapshot(site) == before


@pytest.mark.parametrize("marker", [b"{}", b'{"format": "web", "tinydiffusion": "0.1.0"}', b"not json",
                                    b'{"files": {"photos/cat.jpg": "0000"}}', b'{"files": {"photos": []}}'])
def test_a_stray_marker_does_not_make_a_folder_replaceable(marker, checkpoints, tmp_path, capsys):
    folder = tmp_path / "album"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    (folder / EXPORT_MARKER).write_bytes(marker)
    before = snapshot(folder)
    code, err = export(capsys, "diffusers", checkpoints[0], folder)
    assert_error(code, err, str(folder))
    assert any(fragment in err for fragment in ("lists no files", "changed since", "holds photos,"))
    assert snapshot(folder) == before


def test_a_re_export_replaces_the_earlier_export_s_files_and_only_those(checkpoints, tmp_path, capsys):
    """A DiT's folder over a UNet's: the UNet's network module goes, the marker lists exactly the new files, and no
    temporary is left in the folder or beside it."""
    out = tmp_path / "work" / "out"
    out.parent.mkdir()
    assert export(capsys, "diffusers", checkpoints[0], out)[0] == 0
    first = listed(out)
    dit = tiny_model(tmp_path / "dit", kind="dit")
    assert export(capsys, "diffusers", dit, out)[0] == 0
    second = listed(out)
    assert any("tinydiffusion_unet_" in name for name in first) and not any("unet" in name for name in second)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_an_export_that_fails_leaves_a_folder_the_next_export_replaces(checkpoints, tmp_path, capsys, monkeypatch):
    """A failure while the files are made leaves the folder as it was; one while they are renamed into place (a full
    disk, a kill) leaves old and new files, both listed in the marker, so the next export still replaces them."""
    out = tmp_path / "out"
    assert export(capsys, "diffusers", checkpoints[0], out)[0] == 0
    before = snapshot(out)
    with pytest.raises(RuntimeError), export_directory(out, EXPORT_MARKER, {"format": "test"}) as stage:
        (stage / "half.bin").write_bytes(b"half")
        raise RuntimeError("the export failed while it wrote its files")
    assert snapshot(out) == before
    renames, real_replace = [], os.replace

    def failing_replace(source, target):
        renames.append(target)
        if len(renames) == 3:  # the marker that lists old and new, one file, then the failure
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    assert_error(*export(capsys, "diffusers", checkpoints[1], out), "could not write", "No space left on device")
    monkeypatch.undo()
    assert snapshot(out) != before  # mixed: one file is new
    assert export(capsys, "diffusers", checkpoints[1], out)[0] == 0
    listed(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["pipe", "zero", "huge"])
def test_a_marker_that_is_not_a_small_file_is_refused_without_hanging(kind, checkpoints, tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "index.html").write_text("<p>mine</p>")
    marker = folder / EXPORT_MARKER
    if kind == "pipe":
        os.mkfifo(marker)
    elif kind == "zero":
        marker.symlink_to("/dev/zero")
    else:
        marker.write_bytes(b"{" + b" " * (4 << 20) + b"}")
    done = capped("export", checkpoints[0], "--format", "diffusers", "--out", folder)
    assert_error(done.returncode, done.stderr, "export did not write" if kind != "huge" else "lists no files")
    assert (folder / "index.html").read_text() == "<p>mine</p>" and sorted(p.name for p in folder.iterdir()) == [
        "index.html", EXPORT_MARKER]


# --- 2. never over the model it reads ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(checkpoints, tmp_path_factory) -> Path:
    """A diffusers folder, a model tinydiffusion loads."""
    folder = tmp_path_factory.mktemp("exported") / "model-diffusers"
    write_diffusers(load_model(checkpoints[0], "cpu"), folder)
    return folder


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_folder_export_refuses_to_write_over_the_folder_it_reads(fmt, exported, tmp_path, capsys):
    before = snapshot(exported)
    link = tmp_path / "link"
    link.symlink_to(exported)
    for out, relation in ((exported, "is"), (link, "is"), (exported / "denoiser" / "site", "is inside")):
        assert_error(*export(capsys, fmt, exported, out), f"--out {out} {relation} the model being exported")
        assert snapshot(exported) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_folder_export_refuses_the_run_it_reads_or_a_folder_inside_it(fmt, trained_run, capsys):
    before = snapshot(trained_run)
    for out, relation in ((trained_run / "site", "is inside"), (trained_run / "checkpoints", "is inside"),
                          (trained_run, "is")):
        assert_error(*export(capsys, fmt, trained_run, out), f"{relation} the model being exported")
    assert snapshot(trained_run) == before


def test_a_writer_refuses_a_folder_that_holds_its_model(exported):
    """The library's writers check too: a folder that holds the model's weights is never written."""
    before = snapshot(exported.parent)
    with pytest.raises(UserError, match="holds the model being exported") as caught:
        write_diffusers(load_model(exported, "cpu"), exported.parent)
    assert str(caught.value).endswith(".") and snapshot(exported.parent) == before


# --- 3. a linked --out ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_linked_out_is_written_through_and_nothing_is_left_behind(fmt, checkpoints, quick_web, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    target, link = work / "real-site", work / "site"
    assert export(capsys, fmt, checkpoints[0], target)[0] == 0
    first = snapshot(target)
    link.symlink_to(target)
    assert export(capsys, fmt, checkpoints[1], link)[0] == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(p.name for p in work.iterdir()) == ["real-site", "site"]  # no `.old-site`, no temporary
    assert snapshot(target) != first and listed(target)  # the link's target holds the new export


def test_a_linked_onnx_file_is_written_through_and_a_link_to_another_file_refused(checkpoints, tmp_path, capsys,
                                                                                 monkeypatch):
    from tinydiffusion.export import onnx_file

    monkeypatch.setattr(onnx_file, "onnx_bytes", lambda model, decoder=None: b"the graph")  # not at issue here
    target, link = tmp_path / "releases" / "v2.onnx", tmp_path / "model.onnx"
    target.parent.mkdir()
    target.write_bytes(b"an earlier export")
    link.symlink_to(target)
    assert cli(capsys, "export", checkpoints[0], "--out", link)[0] == 0
    assert link.is_symlink() and target.read_bytes() == b"the graph"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["model.onnx", "releases", "v2.onnx"]
    notes, other = tmp_path / "notes.txt", tmp_path / "notes.onnx"
    notes.write_text("mine")
    other.symlink_to(notes)
    code, _, err = cli(capsys, "export", checkpoints[0], "--out", other)
    assert_error(code, err, "is a link to", "which is not an .onnx file")
    assert notes.read_text() == "mine" and other.is_symlink()


def test_a_link_to_nowhere_is_refused(checkpoints, tmp_path, capsys):
    link = tmp_path / "site"
    link.symlink_to(tmp_path / "gone")
    assert_error(*export(capsys, "diffusers", checkpoints[0], link), "is a link to", "which does not exist")
    assert link.is_symlink() and sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_a_replaced_folder_behind_a_link_keeps_the_link(tmp_path):
    target, link = tmp_path / "step-1", tmp_path / "latest"
    target.mkdir()
    (target / "old.txt").write_text("old")
    link.symlink_to(target)
    with atomic_directory(link, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert link.is_symlink() and [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-1"]


# --- 4. the current folder ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("spelling", [".", "$PWD"])
def test_an_export_into_the_current_folder_keeps_it(fmt, spelling, checkpoints, quick_web, tmp_path, capsys,
                                                    monkeypatch):
    """`--out .` and `--out "$PWD"`, new and again: the files are replaced in place, and the folder the shell stands
    in stays (the same inode)."""
    site = tmp_path / "site"
    site.mkdir()
    inode = site.stat().st_ino
    monkeypatch.chdir(site)
    out = "." if spelling == "." else os.getcwd()
    shots = []
    for checkpoint in checkpoints:
        assert export(capsys, fmt, checkpoint, out)[0] == 0
        assert os.stat(".").st_ino == inode == site.stat().st_ino and Path.cwd() == site
        shots.append(snapshot(site))
    assert shots[0] != shots[1] and listed(site) and sorted(p.name for p in tmp_path.iterdir()) == ["cache", "site"]
