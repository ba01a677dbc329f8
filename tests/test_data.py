"""Data: IDX validation with clear errors, the pixel map, and the checked, atomic download."""

import gzip
import hashlib

import numpy as np
import pytest
import torch

from tinydiffusion.config import DataConfig
from tinydiffusion.data import class_index, load_data, read_idx, write_idx
from tinydiffusion.data.download import download_files
from tinydiffusion.data.named import FASHION_MNIST
from tinydiffusion.data.pixels import to_model_space, to_pixels
from tinydiffusion.errors import UserError

FILES = FASHION_MNIST.files


def load_fashion_mnist(folder, split):
    return load_data(DataConfig(data_dir=str(folder), download=False), split, progress=False)


def download(folder, mirrors, files):
    download_files(folder, mirrors, files, "Fashion-MNIST", progress=False)


def test_pixel_round_trip_is_exact():
    pixels = torch.arange(256, dtype=torch.uint8)
    x = to_model_space(pixels)
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.equal(to_pixels(x), pixels)
    assert to_pixels(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]  # out-of-range values clip


def test_idx_round_trip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", array)
    assert np.array_equal(read_idx(tmp_path / "x.gz", expected_ndim=3), array)
    raw = tmp_path / "raw"
    raw.write_bytes(gzip.decompress((tmp_path / "x.gz").read_bytes()))
    assert np.array_equal(read_idx(raw), array)  # uncompressed files read too


def header(ndim, dims, type_byte=8):
    return bytes([0, 0, type_byte, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize("payload,message", [
    (b"", "bad magic"),
    (b"\x01\x02\x08\x03" + b"\0" * 12, "bad magic"),
    (header(3, [2, 28, 28], type_byte=0x0D) + bytes(2 * 784), "type"),
    (header(3, [2, 28, 28]) + bytes(100), "truncated"),
    (header(3, [2, 28, 28]) + bytes(2 * 784 + 5), "longer than its header"),
    (header(3, [4_000_000_000, 28, 28]) + bytes(10), "implausible"),
    (header(2, [2, 28]) + bytes(56), "dimensions"),
    (b"\x1f\x8b" + b"not really gzip", "cannot be read"),
])
def test_bad_idx_files_name_the_file(tmp_path, payload, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(UserError, match=message) as info:
        read_idx(path, expected_ndim=3)
    assert str(path) in str(info.value)


def test_missing_data_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="--data-dir"):
        load_fashion_mnist(tmp_path / "nowhere", "train")


def test_images_and_labels_must_agree(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(UserError, match="do not belong together"):
        load_fashion_mnist(tmp_path, "train")


def make_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sums = {}
    for name in FILES:
        shape = (3, 28, 28) if "images" in name else (3,)
        write_idx(mirror / name, np.ones(shape, np.uint8))
        sums[name] = hashlib.md5((mirror / name).read_bytes()).hexdigest()
    return mirror, sums


def test_download_verifies_md5_and_writes_atomically(tmp_path):
    mirror, sums = make_mirror(tmp_path)
    target = tmp_path / "data"
    download(target, mirrors=(mirror.as_uri() + "/",), files=sums)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)  # no temporaries left behind
    assert load_fashion_mnist(target, "test").images.shape == (3, 1, 28, 28)


def test_download_rejects_a_wrong_checksum_and_writes_nothing(tmp_path):
    mirror, sums = make_mirror(tmp_path)
    sums = {name: "0" * 32 for name in sums}
    target = tmp_path / "data"
    with pytest.raises(UserError, match="MD5"):
        download(target, mirrors=(mirror.as_uri() + "/",), files=sums)
    assert list(target.iterdir()) == []


def test_download_keeps_files_already_present(tmp_path):
    mirror, sums = make_mirror(tmp_path)
    target = tmp_path / "data"
    target.mkdir()
    existing = target / "t10k-labels-idx1-ubyte.gz"
    write_idx(existing, np.full(7, 2, np.uint8))  # other sums, valid header: kept as is
    download(target, mirrors=(mirror.as_uri() + "/",), files=sums)
    assert read_idx(existing).tolist() == [2] * 7


@pytest.mark.parametrize("text,index", [("sneaker", 7), ("Sneaker", 7), ("7", 7), ("ankle boot", 9), ("T-shirt", 0)])
def test_class_names_and_indices(text, index):
    assert class_index(text, FASHION_MNIST.class_names, FASHION_MNIST.class_aliases) == index


def test_unknown_class_lists_the_valid_ones():
    with pytest.raises(UserError, match="sneaker.*ankle-boot"):
        class_index("sandwich", FASHION_MNIST.class_names)


def test_a_version_1_config_reads_as_a_fashion_mnist_run():
    """Runs saved before `data.source` existed named their dataset `data.dataset`, kept in data/fashion-mnist."""
    from tinydiffusion.config import RunConfig

    old = {"name": "old", "data": {"dataset": "fashion-mnist", "data_dir": "data/fashion-mnist", "download": True},
           "format_version": 1}
    config = RunConfig.from_dict(old)
    assert (config.data.source, config.data.data_dir, config.format_version) == ("fashion-mnist", "", 2)
    kept = RunConfig.from_dict({**old, "data": {**old["data"], "data_dir": "/my/copy"}})
    assert kept.data.data_dir == "/my/copy"  # a folder the user chose stays


def test_the_bundled_model_knows_its_class_names():
    from tinydiffusion.pipeline import load_model

    model = load_model(device="cpu")
    assert model.class_names == FASHION_MNIST.class_names
    assert model.class_index("Ankle boot") == 9 and model.class_index("boot") == 9
