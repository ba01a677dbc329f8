"""ONNX export of a latent model (issue 46): the denoiser over the latents in one file and the decoder beside it
(FILE.decoder.onnx, pinned by its SHA-256 in the first's metadata), written together and through links as the first
is; sampling through them with onnxruntime draws PyTorch's images (denoise, then decode); a missing, damaged or other
decoder is one sentence."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_error, cli, run_cli
from test_export import PARITY, doc_sampler, needs_onnx, one_sentence, tiny_model

from tinydiffusion.autoencoders import decode
from tinydiffusion.data.pixels import to_pixels
from tinydiffusion.errors import UserError
from tinydiffusion.export import OnnxGraph, onnx_file, onnx_graph
from tinydiffusion.export.onnx_file import decoder_name
from tinydiffusion.pipeline import denoiser, generate, load_model, start_noise
from tinydiffusion.samplers import SAMPLERS

pytestmark = needs_onnx


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny latent model over TAEF2's latents of 32-px colour images (32 x 4 x 4), ten classes."""
    return tiny_model(tmp_path_factory.mktemp("latent"), latent=True, num_classes=10)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    """`export CHECKPOINT --out latent.onnx`, once: the graph, with its decoder beside it."""
    out = tmp_path_factory.mktemp("exported") / "latent.onnx"
    done = run_cli(["export", checkpoint, "--out", out])
    assert done.returncode == 0, done.stderr
    assert "its decoder beside it: latent.decoder.onnx" in done.stdout, done.stdout
    return out


def copy_export(exported: Path, folder: Path) -> Path:
    """The two files of an export, copied into `folder`; the graph's path."""
    for path in (exported, exported.with_name(decoder_name(exported.name))):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder / exported.name


# --- the two files ---------------------------------------------------------------------------------------------


def test_the_graph_is_over_the_latents_and_its_metadata_pins_the_decoder_beside_it(exported):
    import onnx

    graph = OnnxGraph(exported, threads=1)
    meta, decoder = graph.metadata, exported.with_name("latent.decoder.onnx")
    assert meta["image_shape"] == [32, 4, 4] and [i.shape[1:] for i in graph.session.get_inputs()][0] == [32, 4, 4]
    assert meta["latent"]["autoencoder"] == "taef2" and meta["latent"]["image_shape"] == [3, 32, 32]
    assert meta["latent"]["decoder"] == decoder.name
    assert meta["latent"]["decoder_sha256"] == hashlib.sha256(decoder.read_bytes()).hexdigest()
    assert (meta["latent"]["decoder_inputs"], meta["latent"]["decoder_outputs"]) == (["z"], ["image"])
    assert "decoder's image" in meta["pixels"]
    assert [(i.name, i.shape[1:]) for i in graph.decoder.get_inputs()] == [("z", [32, 4, 4])]
    assert [(o.name, o.shape[1:]) for o in graph.decoder.get_outputs()] == [("image", [3, 32, 32])]
    proto = onnx.load(decoder)
    onnx.checker.check_model(proto)
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 18
    licence = {p.key: p.value for p in proto.metadata_props}["license"]
    assert "MIT License" in licence and "Ollin Boer Bohan" in licence  # the weights' licence travels with them
    assert decoder.stat().st_size < 8e6  # the decoder's weights alone (5.4 MB in float32), not the encoder's too


def test_the_decoder_graph_decodes_as_the_autoencoder_does(checkpoint, exported):
    """The run's standardisation undone and TAEF2's decoder, within float32 rounding of autoencoders.decode."""
    model, graph = load_model(checkpoint, "cpu"), OnnxGraph(exported, threads=1)
    z = torch.randn(3, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    ours, theirs = decode(model.config.data, z), graph.decode(z)
    assert theirs.shape == (3, 3, 32, 32) and ours.abs().max() <= 1 and ours.std() > 0.05
    assert (ours - theirs).abs().max() < PARITY


def test_onnxruntime_samples_and_decodes_the_images_torch_draws(checkpoint):
    """The sampler through the graph, then the decoder graph (generate() decodes through it): PyTorch's latents
    within 1e-4 relative to their scale, and its pixels within one 8-bit level."""
    model = load_model(checkpoint, "cpu")
    graph = onnx_graph(model, threads=1)  # exported in memory, the decoder with it
    labels = torch.tensor([0, 7, 9])
    noise, generators = start_noise(model, 2, 0, 3)
    x0 = [SAMPLERS["dpmpp-2m"](denoiser(runtime, labels, 2.0), noise, model.diffusion, 6, generator=generators)
          for runtime in (model, dataclasses.replace(model, graph=graph))]
    assert (x0[0] - x0[1]).abs().max() < PARITY * max(1.0, float(x0[0].abs().max()))
    pixels = [generate(runtime, 4, classes=[3], steps=4, seed=1)[0]
              for runtime in (model, dataclasses.replace(model, graph=graph))]
    assert pixels[0].shape == (4, 3, 32, 32) and pixels[0].float().std() > 10
    difference = (pixels[0].int() - pixels[1].int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


def test_sample_reads_the_exported_files_alone(checkpoint, exported, tmp_path):
    """`sample --runtime onnxruntime --checkpoint F.onnx` decodes through the decoder file: the images of the
    checkpoint, in pixels of the data's shape."""
    common = ["sample", "--num", "3", "--seed", "4", "--steps", "4", "--class", "2"]
    assert run_cli([*common, "--checkpoint", checkpoint, "--out", tmp_path / "torch.npz"]).returncode == 0
    done = run_cli([*common, "--runtime", "onnxruntime", "--checkpoint", exported, "--out", tmp_path / "onnx.npz"])
    assert done.returncode == 0, done.stderr
    ours, theirs = (np.load(tmp_path / f"{name}.npz")["arr_0"].astype(int) for name in ("torch", "onnx"))
    assert ours.shape == (3, 32, 32, 3) and np.abs(ours - theirs).max() <= 1


def test_the_numpy_sampler_in_the_docs_decodes_a_latent_model(checkpoint, exported, tmp_path, monkeypatch):
    """docs/reference/onnx.md's block, run as it stands beside model.onnx and model.decoder.onnx, draws
    tinydiffusion's ddim latents and decodes them as tinydiffusion does."""
    (tmp_path / "model.onnx").write_bytes(exported.read_bytes())
    decoder = exported.with_name("latent.decoder.onnx")  # under the name the graph's metadata gives it
    (tmp_path / decoder.name).write_bytes(decoder.read_bytes())
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(doc_sampler(), "docs/reference/onnx.md", "exec"), names)
    model = load_model(checkpoint, "cpu")
    reference = SAMPLERS["ddim"](denoiser(model, torch.full((names["n"],), 7), names["w"]),
                                 torch.from_numpy(names["noise"]), model.diffusion, names["S"])
    expected = to_pixels(decode(model.config.data, reference)).numpy().astype(int)
    assert names["pixels"].shape == (names["n"], 3, 32, 32)
    assert np.abs(expected - names["pixels"]).max() <= 1


# --- writing the two together ----------------------------------------------------------------------------------


@pytest.fixture
def quick(monkeypatch):
    """Stand-ins for the two graphs (what the files hold is not what these tests are about)."""
    monkeypatch.setattr(onnx_file, "decoder_file", lambda model, name: (decoder_name(name), b"the decoder"))
    monkeypatch.setattr(onnx_file, "onnx_bytes", lambda model, decoder=None: b"the graph naming " + decoder[0].encode())


def test_a_linked_out_writes_both_files_beside_its_target(checkpoint, quick, tmp_path, capsys):
    target, link = tmp_path / "releases" / "v2.onnx", tmp_path / "model.onnx"
    target.parent.mkdir()
    target.write_bytes(b"an earlier export")
    link.symlink_to(target)
    code, out, err = cli(capsys, "export", checkpoint, "--out", link)
    assert code == 0, err
    assert link.is_symlink() and target.read_bytes() == b"the graph naming v2.decoder.onnx"
    assert (tmp_path / "releases" / "v2.decoder.onnx").read_bytes() == b"the decoder"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "model.onnx", "releases", "releases/v2.decoder.onnx", "releases/v2.onnx"]


@pytest.mark.parametrize("kind", ["folder", "link-to-notes"])
def test_a_decoder_place_that_is_not_an_earlier_export_is_refused_before_any_work(checkpoint, tmp_path, capsys,
                                                                                   monkeypatch, kind):
    monkeypatch.setattr(onnx_file, "decoder_file", lambda *args: pytest.fail("the decoder was exported"))
    place = tmp_path / "model.decoder.onnx"
    if kind == "folder":
        place.mkdir()
        (place / "keep.txt").write_text("mine")
    else:
        (tmp_path / "notes.txt").write_text("mine")
        place.symlink_to(tmp_path / "notes.txt")
    before = sorted(tmp_path.rglob("*"))
    code, _, err = cli(capsys, "export", checkpoint, "--out", tmp_path / "model.onnx")
    assert_error(code, err, *(["is a folder"] if kind == "folder" else ["is a link to", "not an .onnx file"]))
    assert sorted(tmp_path.rglob("*")) == before and "mine" in {p.read_text() for p in before if p.is_file()}


def test_a_failure_leaves_both_earlier_files_as_they_were(checkpoint, quick, tmp_path, capsys, monkeypatch):
    """A refusal while the graph is made, and a full disk while the second file is written, leave the earlier pair
    and no temporary file."""
    out = tmp_path / "model.onnx"
    before = {out: b"an earlier graph", tmp_path / "model.decoder.onnx": b"its decoder"}
    for path, payload in before.items():
        path.write_bytes(payload)

    def refused(model, decoder=None):
        raise UserError("this network cannot be written as an ONNX graph (a test).")

    monkeypatch.setattr(onnx_file, "onnx_bytes", refused)
    code, _, err = cli(capsys, "export", checkpoint, "--out", out)
    assert_error(code, err, "cannot be written as an ONNX graph")
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before
    monkeypatch.setattr(onnx_file, "onnx_bytes", lambda model, decoder=None: b"the new graph")
    real_write, writes = Path.write_bytes, []

    def full_disk(path, payload):
        writes.append(path)
        if len(writes) == 2:  # the first file is written to its temporary, the second fails
            raise OSError(28, "No space left on device")
        return real_write(path, payload)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    code, _, err = cli(capsys, "export", checkpoint, "--out", out)
    monkeypatch.undo()
    assert_error(code, err, "could not write", "No space left on device")
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before


# --- hostile files at `sample --runtime onnxruntime` -----------------------------------------------------------


def sample_refusal(capsys, graph: Path, *fragments: str) -> str:
    out = graph.parent / "s.png"
    message = one_sentence(capsys, "sample", "--runtime", "onnxruntime", "--checkpoint", graph, "--steps", "2",
                           "--out", out)
    assert not out.exists()
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("damage", ["missing", "changed", "truncated", "folder", "fifo", "other"])
def test_a_missing_or_damaged_decoder_is_one_sentence(exported, tmp_path, capsys, damage):
    graph = copy_export(exported, tmp_path)
    decoder = tmp_path / "latent.decoder.onnx"
    payload = decoder.read_bytes()
    if damage == "missing":
        decoder.unlink()
    elif damage == "changed":  # one byte of the weights
        decoder.write_bytes(payload[:-100] + bytes([payload[-100] ^ 1]) + payload[-99:])
    elif damage == "truncated":
        decoder.write_bytes(payload[:1000])
    elif damage == "folder":
        decoder.unlink()
        decoder.mkdir()
    elif damage == "fifo":
        decoder.unlink()
        os.mkfifo(decoder)
    else:  # the graph of another export: a valid ONNX file, not this one's decoder
        decoder.write_bytes(graph.read_bytes())
    expected = {"missing": "does not exist", "folder": "is a folder", "fifo": "is a named pipe"}.get(
        damage, "is not the decoder latent.onnx was exported with")
    sample_refusal(capsys, graph, expected)


@pytest.mark.parametrize("name", ["../latent.decoder.onnx", "/etc/passwd", "", None, 3])
def test_metadata_naming_a_decoder_elsewhere_is_one_sentence(exported, tmp_path, capsys, name):
    import onnx

    proto = onnx.load(exported)
    meta = json.loads(proto.metadata_props[0].value)
    meta["latent"]["decoder"] = name
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"tinydiffusion": json.dumps(meta)})
    (tmp_path / "inner").mkdir()
    graph = tmp_path / "inner" / "latent.onnx"
    graph.write_bytes(proto.SerializeToString())
    copy_export(exported, tmp_path)  # a decoder one folder up, which the metadata must not reach
    sample_refusal(capsys, graph, "metadata names no decoder file")


def test_a_latent_graph_whose_metadata_drops_the_decoder_is_one_sentence(exported, tmp_path, capsys):
    import onnx

    proto = onnx.load(exported)
    meta = json.loads(proto.metadata_props[0].value)
    meta["latent"] = None  # a pixel model's metadata, over a latent model's config
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"tinydiffusion": json.dumps(meta)})
    graph = tmp_path / "latent.onnx"
    graph.write_bytes(proto.SerializeToString())
    sample_refusal(capsys, graph, "a graph and a decoder its metadata does not describe")


def test_a_latent_graph_in_memory_needs_its_decoder(exported):
    with pytest.raises(UserError, match="give its decoder graph with it"):
        OnnxGraph(exported.read_bytes(), threads=1)
