"""Hostile inputs: files that would run code, damaged checkpoints, fuzzed IDX and .npz files, bad arguments.

Every one must end as a single `error: ...` line with exit status 2 (or a UserError in-process), never a
traceback, never code from a file run, never a huge allocation, and never a file written before the check.
Most command-line cases call `tinydiffusion.cli.main` in-process (a subprocess per case would cost seconds
of torch import each); `test_cli_errors_in_a_real_process` checks the same contract end to end.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import pickle
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_error, cli, run_cli, smoke_config, train_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinydiffusion import checkpoint as ckpt
from tinydiffusion.config import FORMAT_VERSION, DataConfig
from tinydiffusion.data import MAX_IDX_BYTES, load_data, read_idx, write_idx
from tinydiffusion.errors import UserError
from tinydiffusion.evaluation import load_samples_npz
from tinydiffusion.training import train

# --- helpers ---------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def unconditional_run(tiny_data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hostile") / "uncond"
    train(smoke_config(tiny_data_dir, **{"train.max_steps": 1, "net.num_classes": 0}), run, progress=False)
    return run


def checkpoint_dir(run: Path) -> Path:
    found = ckpt.latest_checkpoint(run)
    assert found is not None
    return found


# --- a pickle that would run code -----------------------------------------------------------


class _RunsCode:
    """Unpickling this calls os.system: the classic malicious pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _RunsPython:
    """Unpickling this calls exec on Python source that creates the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _evil_files(marker: Path) -> dict[str, bytes]:
    state = {"step": 2, "optimizer": {}, "payload": _RunsCode(marker)}
    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    return {
        "torch-zip-os-system": zipped.getvalue(),
        "torch-legacy-os-system": legacy.getvalue(),
        "bare-pickle-os-system": pickle.dumps(state, protocol=2),
        "bare-pickle-exec": pickle.dumps({"step": 2, "payload": _RunsPython(marker)}),
        "pickle-protocol-5": pickle.dumps(_RunsCode(marker), protocol=5),
    }


EVIL_KINDS = list(_evil_files(Path("/nonexistent")))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_training_state_that_would_run_code_is_refused(run_copy, tmp_path, kind):
    marker = tmp_path / "pwned"
    found = checkpoint_dir(run_copy)
    (found / ckpt.STATE_FILE).write_bytes(_evil_files(marker)[kind])
    with pytest.raises(UserError, match="training_state.pt"):
        ckpt.load_training_state(found)
    assert not marker.exists(), "unpickling ran code from the file"


def test_resume_from_a_malicious_checkpoint_is_refused_through_the_cli(run_copy, tmp_path, capsys):
    marker = tmp_path / "pwned"
    (checkpoint_dir(run_copy) / ckpt.STATE_FILE).write_bytes(_evil_files(marker)["torch-zip-os-system"])
    code, _, err = cli(capsys, "train", "--resume", run_copy, "--no-progress", "--max-steps", 3)
    assert_error(code, err, "refused")
    assert not marker.exists()


def _state_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


DAMAGED_STATES = {
    "empty": lambda good: b"",
    "random-bytes": lambda good: np.random.default_rng(0).bytes(4096),
    "truncated": lambda good: good[: len(good) // 2],
    "not-a-dict": lambda good: _state_bytes([1, 2, 3]),
    "no-optimizer": lambda good: _state_bytes({"step": 2}),
    "wrong-generator-type": lambda good: _state_bytes({**torch.load(io.BytesIO(good), weights_only=True),
                                                      "generator": "not a tensor"}),
    "step-not-a-number": lambda good: _state_bytes({**torch.load(io.BytesIO(good), weights_only=True),
                                                   "step": "many"}),
    # damaged pickles on which torch's weights-only unpickler raises KeyError, IndexError and struct.error
    "text": lambda good: b"hello world",
    "pickle-bad-memo-key": lambda good: b"\x80\x02hq\x00(X\x04\x00\x00\x00stepq\x01K\x01e.",
    "pickle-pop-empty-stack": lambda good: b"\x80\x02}q\x00(X\x04\x00\x00\x00stepq\x01K\x01uu",
    "pickle-short-float": lambda good: b"\x80\x02}q\x00(X\x04\x00\x00\x00stepq\x01G\x01u.",
}


@pytest.mark.parametrize("kind", list(DAMAGED_STATES))
def test_damaged_training_state_is_one_sentence_on_resume(run_copy, capsys, kind):
    path = checkpoint_dir(run_copy) / ckpt.STATE_FILE
    path.write_bytes(DAMAGED_STATES[kind](path.read_bytes()))
    code, _, err = cli(capsys, "train", "--resume", run_copy, "--no-progress", "--max-steps", 3)
    assert_error(code, err, "step-00000002")  # names the damaged checkpoint


def _mutated(good: bytes, data) -> bytes:
    """Random bytes, or `good` cut short and with a few bytes overwritten (hypothesis draws the changes)."""
    if data.draw(st.booleans()):
        return data.draw(st.binary(max_size=300))
    damaged = bytearray(good[: data.draw(st.integers(0, len(good)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    return bytes(damaged)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@FUZZ
@given(data=st.data())
def test_training_state_fuzz(trained_run, fuzz_dir, data):
    good = (checkpoint_dir(trained_run) / ckpt.STATE_FILE).read_bytes()
    legacy = io.BytesIO()
    torch.save({"step": 1, "rng": torch.arange(5, dtype=torch.uint8)}, legacy, _use_new_zipfile_serialization=False)
    target = fuzz_dir / "state-fuzz"
    target.mkdir(exist_ok=True)
    shutil.copy(checkpoint_dir(trained_run) / ckpt.INFO_FILE, target / ckpt.INFO_FILE)
    (target / ckpt.STATE_FILE).write_bytes(_mutated(data.draw(st.sampled_from([good, legacy.getvalue()])), data))
    try:
        state = ckpt.load_training_state(target)
    except UserError as err:
        assert ckpt.STATE_FILE in str(err)
        return
    assert isinstance(state, dict) and "step" in state


@FUZZ
@given(data=st.data())
def test_safetensors_fuzz(trained_run, fuzz_dir, data):
    path = fuzz_dir / "fuzz.safetensors"
    path.write_bytes(_mutated((checkpoint_dir(trained_run) / ckpt.EMA_FILE).read_bytes(), data))
    try:
        weights = ckpt.load_weights(path)
    except UserError as err:
        assert str(path) in str(err)
        return
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


# --- damaged checkpoints, through `tinydiffusion sample` -------------------------------------


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _safetensors_header_only(path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1_000_000], "data_offsets": [0, 4_000_000]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)


HOSTILE_CHECKPOINTS = {  # name -> (damage(checkpoint_dir), words the error must contain)
    "config-wider-than-weights": (lambda d: _edit_json(d / "config.json", lambda c: c["net"].update(base_channels=16)),
                                  "do not match"),
    "config-deeper-than-weights": (lambda d: _edit_json(d / "config.json", lambda c: c["net"].update(num_res_blocks=2)),
                                   "do not match"),
    "config-unconditional": (lambda d: _edit_json(d / "config.json", lambda c: c["net"].update(num_classes=0)),
                             "do not match"),
    "weights-truncated": (lambda d: (d / "ema.safetensors").write_bytes((d / "ema.safetensors").read_bytes()[:5000]),
                          "safetensors"),
    "weights-truncated-in-header": (lambda d: (d / "ema.safetensors").write_bytes(b"\x10\x00\x00"), "safetensors"),
    "weights-random-bytes": (lambda d: (d / "ema.safetensors").write_bytes(np.random.default_rng(1).bytes(9000)),
                             "safetensors"),
    "weights-empty": (lambda d: (d / "ema.safetensors").write_bytes(b""), "safetensors"),
    "weights-header-claims-exabytes": (lambda d: (d / "ema.safetensors").write_bytes(b"\xff" * 8 + b"{}"),
                                       "safetensors"),
    "weights-data-beyond-file": (lambda d: _safetensors_header_only(d / "ema.safetensors"), "safetensors"),
    "weights-missing": (lambda d: [(d / n).unlink() for n in ("ema.safetensors", "model.safetensors")],
                        "not a checkpoint"),
    "config-newer-format": (lambda d: _edit_json(d / "config.json",
                                                 lambda c: c.update(format_version=FORMAT_VERSION + 1)), "newer"),
    "checkpoint-json-newer-format": (lambda d: _edit_json(d / "checkpoint.json",
                                                          lambda c: c.update(format_version=FORMAT_VERSION + 1)),
                                     "newer"),
    "checkpoint-json-version-is-text": (lambda d: _edit_json(d / "checkpoint.json",
                                                             lambda c: c.update(format_version="2")),
                                        "format_version"),
    "checkpoint-json-random-bytes": (lambda d: (d / "checkpoint.json").write_bytes(b"\xff\xfe\x00garbage"),
                                     "checkpoint.json"),
    "config-random-bytes": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe\x00garbage"), "json"),
    "config-empty": (lambda d: (d / "config.json").write_text(""), "json"),
    "config-a-list": (lambda d: (d / "config.json").write_text("[1, 2]"), "object"),
    "config-unknown-field": (lambda d: _edit_json(d / "config.json", lambda c: c["net"].update(wings=2)), "wings"),
    "config-wrong-type": (lambda d: _edit_json(d / "config.json", lambda c: c["net"].update(base_channels="wide")),
                          "base_channels"),
    "config-impossible-value": (lambda d: _edit_json(d / "config.json", lambda c: c["net"].update(kind="resnet")),
                                "net.kind"),
    "config-section-not-object": (lambda d: _edit_json(d / "config.json", lambda c: c.update(net=[1])), "net"),
}


@pytest.mark.parametrize("kind", list(HOSTILE_CHECKPOINTS))
@pytest.mark.parametrize("target", ["run-dir", "checkpoint-dir"])
def test_damaged_checkpoint_is_one_sentence(run_copy, tmp_path, capsys, kind, target):
    damage, words = HOSTILE_CHECKPOINTS[kind]
    found = checkpoint_dir(run_copy)
    damage(found)
    out = tmp_path / "f.png"
    code, _, err = cli(capsys, "sample", "--checkpoint", run_copy if target == "run-dir" else found,
                       "--num", 2, "--steps", 2, "--out", out, "--device", "cpu")
    assert_error(code, err, words)
    assert not out.exists()


def test_damaged_latest_pointer_falls_back_to_the_newest_checkpoint(run_copy, tmp_path, capsys):
    root = run_copy / "checkpoints"
    for pointer in (b"\xff\xfe\x00\x01", b"../../../../etc\n", b"/tmp\n", b"step-99999999\n", b""):
        (root / "latest").write_bytes(pointer)
        assert ckpt.latest_checkpoint(run_copy) == root / "step-00000002"
    code, out, err = cli(capsys, "sample", "--checkpoint", run_copy, "--num", 2, "--steps", 2,
                         "--out", tmp_path / "f.png", "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "f.png").is_file()


@pytest.mark.parametrize("name,words", [("weights.pt", "safetensors"), ("lonely.safetensors", "no config")])
def test_weights_file_without_a_usable_config(run_copy, tmp_path, capsys, name, words):
    path = tmp_path / "alone" / name
    path.parent.mkdir()
    shutil.copy(checkpoint_dir(run_copy) / "ema.safetensors", path)
    code, _, err = cli(capsys, "sample", "--checkpoint", path, "--num", 2, "--steps", 2, "--out", tmp_path / "f.png")
    assert_error(code, err, words)


# --- IDX fuzzing ----------------------------------------------------------------------------


def idx_header(dims, type_byte=0x08, magic=b"\0\0", ndim=None) -> bytes:
    ndim = len(dims) if ndim is None else ndim
    return magic + bytes([type_byte, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)


def well_formed(payload: bytes) -> tuple[int, ...] | None:
    """The shape an IDX payload (uncompressed) describes exactly, or None if it is malformed."""
    if len(payload) < 4 or payload[:3] != b"\0\0\x08" or payload[3] == 0:
        return None
    ndim = payload[3]
    if len(payload) < 4 + 4 * ndim:
        return None
    shape = tuple(int.from_bytes(payload[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)
    if size == 0 or size > MAX_IDX_BYTES or len(payload) != 4 + 4 * ndim + size:
        return None
    return shape


def check_read_idx(path: Path, payload: bytes | None) -> None:
    """read_idx returns exactly the array the header describes, or raises UserError naming the file."""
    expected = well_formed(payload) if payload is not None else None
    try:
        array = read_idx(path)
    except UserError as err:
        assert str(path) in str(err)
        assert expected is None, f"a well-formed file {expected} was refused: {err}"
        return
    assert expected is not None, "a malformed file was accepted"
    assert array.dtype == np.uint8 and array.shape == expected
    assert array.tobytes() == payload[len(payload) - array.size:]


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("idx-fuzz")


def _write(fuzz_dir: Path, payload: bytes, gz: bool, cut: int | None = None) -> tuple[Path, bytes | None]:
    """Write payload (gzipped or raw, optionally cut short); return the path and the payload a reader sees,
    or None if a reader must refuse the file."""
    data = gzip.compress(payload, mtime=0) if gz else payload
    if cut is not None and cut < len(data):
        data = data[:cut]
        payload = None if gz else data  # a cut gzip stream must be refused (None)
    path = fuzz_dir / ("fuzz.gz" if gz else "fuzz.idx")
    path.write_bytes(data)
    return path, payload


dims_strategy = st.lists(
    st.one_of(st.integers(0, 6), st.sampled_from([28, 60_000, 2**16, 2**31, 2**32 - 1, 536_903_681])),
    min_size=0, max_size=5)


@FUZZ
@given(data=st.binary(max_size=400), gz=st.booleans())
def test_idx_random_bytes(fuzz_dir, data, gz):
    path = fuzz_dir / "random.bin"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    payload = data
    if not gz and data[:2] == b"\x1f\x8b":  # random bytes that start like gzip: whatever gzip makes of them
        try:
            payload = gzip.decompress(data)
        except Exception:
            payload = None
    check_read_idx(path, payload)


@FUZZ
@given(dims=dims_strategy, type_byte=st.sampled_from([0x08, 0x08, 0x08, 0x09, 0x0B, 0x0D, 0x00]),
       magic=st.sampled_from([b"\0\0", b"\0\0", b"\0\0", b"\x01\0", b"\x1f\x8b"]),
       ndim_lie=st.sampled_from([None, None, None, 0, 1, 255]),
       data_delta=st.sampled_from([0, 0, 0, -1, 1, -100, 7]), gz=st.booleans(),
       cut=st.one_of(st.none(), st.none(), st.integers(0, 60)))
def test_idx_hostile_headers(fuzz_dir, dims, type_byte, magic, ndim_lie, data_delta, gz, cut):
    size = math.prod(dims) if dims else 0
    body_len = max(0, min(size, 4096) + data_delta)  # never write a huge body: the header alone must be refused
    body = bytes(range(256)) * (body_len // 256) + bytes(body_len % 256)
    payload = idx_header(dims, type_byte, magic, ndim_lie) + body
    path, seen = _write(fuzz_dir, payload, gz, cut)
    check_read_idx(path, seen)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims", [
    [2**31], [2**31 + 1], [2**32 - 1] * 3, [60_000 * 1000, 28, 28], [64, 2**29 + 2**15 + 1, 2**29 - 2**15 + 1],
    [2**16] * 4, [1] * 255,
], ids=["2GiB", "2GiB+1", "exabytes", "47GB", "int64-wraps-to-64", "wraps-to-0", "255-dims"])
def test_idx_header_claiming_huge_sizes_allocates_nothing(fuzz_dir, dims, gz):
    payload = idx_header(dims) + bytes(64)
    path, _ = _write(fuzz_dir, payload, gz)
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as info:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 8 * 2**20, f"reading a {len(payload)}-byte file peaked at {peak / 2**20:.0f} MiB"


def test_idx_corrupt_deflate_stream_is_a_user_error(fuzz_dir):
    good = gzip.compress(idx_header([4, 28, 28]) + np.random.default_rng(0).bytes(4 * 784), mtime=0)
    bad = good[:10] + bytes(255 - b for b in good[10:40]) + good[40:]  # damage inside the deflate stream
    path = fuzz_dir / "corrupt.gz"
    path.write_bytes(bad)
    with pytest.raises(UserError, match="corrupt.gz"):
        read_idx(path)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "labels-out-of-range", "zlib"])
def test_dataset_loader_errors_name_the_file(tmp_path, damage):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((8, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(8, np.uint8))
    images, labels = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    bad = labels if damage in ("empty", "labels-out-of-range") else images
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:30])
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(2).bytes(500))
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "labels-out-of-range":
        write_idx(bad, np.full(8, 10, np.uint8))
    else:
        raw = bad.read_bytes()
        bad.write_bytes(raw[:12] + b"\xff" * 20 + raw[32:])
    with pytest.raises(UserError) as info:
        load_data(DataConfig(data_dir=str(tmp_path), download=False), "train", progress=False)
    assert str(bad) in str(info.value)


# --- .npz samples for `tinydiffusion evaluate --samples` -------------------------------------



def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_in_zip(shape) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("arr_0.npy", header.getvalue() + bytes(100))
    return buffer.getvalue()


GOOD_NPZ = _npz(arr_0=np.zeros((4, 28, 28, 1), np.uint8), labels=np.arange(4))
HOSTILE_NPZ = {
    "empty": b"",
    "random-bytes": np.random.default_rng(3).bytes(1000),
    "truncated": GOOD_NPZ[: len(GOOD_NPZ) // 2],
    "tail-cut": GOOD_NPZ[:-30],
    "object-array-pickle": _npz(arr_0=np.array([{"a": 1}], dtype=object)),
    "float-images": _npz(arr_0=np.zeros((4, 28, 28, 1), np.float32)),
    "three-dims": _npz(arr_0=np.zeros((4, 28, 28), np.uint8)),
    "no-images": _npz(arr_0=np.zeros((0, 28, 28, 1), np.uint8)),
    "no-arr_0": _npz(images=np.zeros((4, 28, 28, 1), np.uint8)),
    "labels-wrong-length": _npz(arr_0=np.zeros((4, 28, 28, 1), np.uint8), labels=np.arange(3)),
    "labels-float": _npz(arr_0=np.zeros((4, 28, 28, 1), np.uint8), labels=np.zeros(4)),
    "zip-of-text": (lambda b: (zipfile.ZipFile(b, "w").writestr("arr_0.txt", "hello"), b.getvalue())[1])(io.BytesIO()),
    "a-bare-npy": (lambda b: (np.save(b, np.zeros((2, 28, 28, 1), np.uint8)), b.getvalue())[1])(io.BytesIO()),
    "header-claims-petabytes": _npy_in_zip((10**13, 28, 28, 1)),
    "header-claims-314-MB": _npy_in_zip((400_000, 28, 28, 1)),
}


@pytest.mark.parametrize("kind", list(HOSTILE_NPZ))
def test_hostile_npz_is_a_user_error(tmp_path, kind):
    path = tmp_path / "samples.npz"
    path.write_bytes(HOSTILE_NPZ[kind])
    with pytest.raises(UserError) as info:
        load_samples_npz(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("claimed", [(10**13, 28, 28, 1), (400_000, 28, 28, 1)], ids=["petabytes", "314-MB"])
def test_npz_header_claiming_huge_sizes_allocates_nothing(tmp_path, claimed):
    path = tmp_path / "samples.npz"
    path.write_bytes(_npy_in_zip(claimed))  # 100 bytes of data behind the header
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="claims shape"):
            load_samples_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"reading a 1 kB .npz peaked at {peak / 2**20:.0f} MiB"


@FUZZ
@given(data=st.binary(max_size=600), cut=st.integers(0, len(GOOD_NPZ)), flip=st.integers(0, len(GOOD_NPZ) - 1))
def test_npz_fuzz(fuzz_dir, data, cut, flip):
    damaged = bytearray(GOOD_NPZ[:cut])
    if flip < len(damaged):
        damaged[flip] ^= 0xFF
    for payload in (data, bytes(damaged)):
        path = fuzz_dir / "fuzz.npz"
        path.write_bytes(payload)
        try:
            images, labels = load_samples_npz(path)
        except UserError:
            continue
        assert images.dtype == np.uint8 and images.ndim == 4 and len(images) > 0
        assert labels is None or labels.shape == (len(images),)


# --- bad arguments: rejected before any work starts -------------------------------------------


BAD_TRAIN_ARGS = {  # name -> (extra arguments, words the error must contain)
    "epochs-zero": (["--epochs", "0"], "epochs"),
    "epochs-negative": (["--epochs", "-1"], "epochs"),
    "epochs-negative-with-max-steps": (["--epochs", "-3", "--max-steps", "5"], "epochs"),
    "epochs-fraction": (["--epochs", "1.5"], "train.epochs"),
    "batch-size-zero": (["--batch-size", "0"], "batch_size"),
    "batch-size-negative": (["--batch-size", "-16"], "batch_size"),
    "batch-size-larger-than-data": (["--batch-size", "100000"], "batch"),
    "max-steps-negative": (["--max-steps", "-1"], "max_steps"),
    "keep-zero": (["--keep", "0"], "train.keep"),
    "checkpoint-every-negative": (["--checkpoint-every", "-5"], "negative"),
    "lr-not-a-number": (["--train.lr", "abc"], "train.lr"),
    "lr-zero": (["--lr", "0"], "train.lr must be above 0 and at most 1"),
    "lr-nan": (["--lr", "nan"], "train.lr must be a finite number, not nan"),
    "unknown-config-field": (["--train.nonexistent", "1"], "train.nonexistent"),
    "unknown-section": (["--optimizer.lr", "1"], "optimizer.lr"),
    "bool-not-a-bool": (["--train.sample_every_epoch", "maybe"], "sample_every_epoch"),
    "tuple-not-ints": (["--net.channel_mults", "1,two"], "channel_mults"),
    "unknown-preset": (["--preset", "imagenet-1k"], "smoke"),
    "unknown-net": (["--net", "resnet"], "resnet"),
    "unknown-net-kind": (["--net.kind", "resnet"], "net.kind"),
    "unknown-on-nan": (["--train.on_nan", "ignore"], "on_nan"),
    "image-size-mismatch": (["--net.image_size", "32"], "28x28"),
    "channels-mismatch": (["--net.in_channels", "3"], "in_channels"),
    "unknown-device": (["--device", "tpu:7"], "device"),
    "unknown-dataset": (["--data", "imagenet-1k"], "imagenet-1k does not exist"),
    "memory-limit-inf": (["--data.memory_limit_mb", "inf"], "data.memory_limit_mb must be a finite number"),
    "memory-limit-nan": (["--data.memory_limit_mb", "nan"], "data.memory_limit_mb must be a finite number"),
    "image-size-absurd": (["--data.image_size", "99999"], "data.image_size must be 0"),
    "channels-two": (["--data.channels", "2"], "data.channels must be 0"),
    "missing-data-no-download": (["--data.download", "false", "--data-dir", "/nonexistent/fmnist"], "data-dir"),
}


@pytest.mark.parametrize("kind", list(BAD_TRAIN_ARGS))
def test_bad_train_arguments_are_rejected_before_any_work(tiny_data_dir, tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    extra, words = BAD_TRAIN_ARGS[kind]
    code, _, err = cli(capsys, *train_args(tiny_data_dir, tmp_path / "run"), *extra)
    assert_error(code, err, words)
    assert list(tmp_path.iterdir()) == [], "a bad argument still created files"


def test_existing_run_dir_without_resume_is_left_untouched(trained_run, tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    code, _, err = cli(capsys, *train_args(tiny_data_dir, run, "--max-steps", "3"))
    assert_error(code, err, "--resume")
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


@pytest.mark.parametrize("args,words", [
    (["--resume", "{tmp}/nowhere"], "not a run directory"),
    (["--resume", "{tmp}"], "not a run directory"),
    (["--resume", "{started}", "--preset", "smoke"], "--preset does not apply to --resume"),
    (["--resume", "{run}", "--net.base_channels", "16"], "network"),
], ids=["missing", "not-a-run", "no-checkpoint-yet-with-a-preset", "changes-the-network"])
def test_bad_resume_arguments(trained_run, tmp_path, capsys, args, words):
    started = tmp_path / "started"  # a run stopped before its first checkpoint: config.json only
    started.mkdir()
    shutil.copy(trained_run / "config.json", started / "config.json")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = sorted(tmp_path.rglob("*"))
    args = [a.format(tmp=tmp_path, started=started, run=run) for a in args]
    code, _, err = cli(capsys, "train", "--no-progress", *args)
    assert_error(code, err, words)
    assert sorted(tmp_path.rglob("*")) == before


BAD_SAMPLE_ARGS = {  # name -> (arguments, words the error must contain)
    "num-zero": (["--num", "0"], "--num"),
    "num-negative": (["--num", "-3"], "--num"),
    "num-not-a-number": (["--num", "many"], "--num"),
    "steps-zero": (["--steps", "0"], "--steps"),
    "steps-negative": (["--steps", "-2"], "--steps"),
    "steps-more-than-T": (["--steps", "5000"], "100"),
    "steps-T-plus-one": (["--steps", "101"], "100"),
    "batch-size-zero": (["--batch-size", "0"], "--batch-size"),
    "unknown-sampler": (["--sampler", "plms"], "plms"),
    "unknown-class": (["--class", "spaceship"], "sneaker"),
    "class-index-out-of-range": (["--class", "10"], "ankle-boot"),
    "guidance-negative": (["--guidance", "-1"], "--guidance"),
    "eta-with-euler": (["--sampler", "euler", "--eta", "0.5"], "--eta"),
    "spacing-with-heun": (["--sampler", "heun", "--spacing", "leading"], "--spacing"),
    "unknown-spacing": (["--spacing", "random"], "spacing"),
    "out-jpg": (["--out", "{tmp}/f.jpg"], ".png"),
    "out-no-extension": (["--out", "{tmp}/samples"], ".png"),
    "out-folder-missing": (["--out", "{tmp}/no/such/f.png"], "does not exist"),
    "checkpoint-missing": (["--checkpoint", "{tmp}/nothing"], "does not exist"),
    "unknown-device": (["--device", "quantum"], "device"),
    "seed-not-a-number": (["--seed", "abc"], "--seed"),
}


@pytest.mark.parametrize("kind", list(BAD_SAMPLE_ARGS))
def test_bad_sample_arguments_write_nothing(trained_run, tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    args, words = BAD_SAMPLE_ARGS[kind]
    args = [a.format(tmp=tmp_path) for a in args]
    if "--checkpoint" not in args:
        args = ["--checkpoint", trained_run, *args]
    if "--out" not in args:
        args += ["--out", tmp_path / "f.png"]
    code, _, err = cli(capsys, "sample", "--num", 2, "--steps", 2, *args)
    assert_error(code, err, words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,words", [
    (["--guidance", "3"], "unconditional"),
    (["--class", "sneaker"], "unconditional"),
])
def test_unconditional_model_refuses_guidance_and_classes(unconditional_run, tmp_path, capsys, args, words):
    code, _, err = cli(capsys, "sample", "--checkpoint", unconditional_run, "--num", 2, "--steps", 2,
                       "--out", tmp_path / "f.png", *args)
    assert_error(code, err, words)
    assert not (tmp_path / "f.png").exists()


def test_cli_errors_in_a_real_process(trained_run, tiny_data_dir, tmp_path):
    """The same contract end to end: exit 2, one `error:` line on stderr, no traceback, nothing written."""
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    (checkpoint_dir(damaged) / "ema.safetensors").write_bytes(b"")
    before = sorted(tmp_path.rglob("*"))
    cases = [
        (["sample", "--checkpoint", damaged, "--num", 2, "--steps", 2, "--out", tmp_path / "f.png"], "safetensors"),
        (train_args(tiny_data_dir, tmp_path / "new-run", "--train.lr", "abc"), "train.lr"),
    ]
    for args, words in cases:
        result = run_cli(args, cwd=tmp_path, timeout=120)
        assert_error(result.returncode, result.stderr, words)
    assert sorted(tmp_path.rglob("*")) == before
