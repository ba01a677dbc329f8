"""The checked downloader against a real HTTP server on 127.0.0.1: a good download, a wrong checksum, a dropped
connection, a failing first mirror, and a named dataset fetched end to end by load_data. A download that must
not be kept leaves nothing behind: no file under the real name, no temporary."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tinydiffusion.config import DataConfig
from tinydiffusion.data import NAMED, load_data, write_idx
from tinydiffusion.data.download import download_files
from tinydiffusion.data.named import IDX_FILES
from tinydiffusion.errors import UserError


@pytest.fixture
def server(monkeypatch):
    """An HTTP server in a thread: `routes` maps a path to (body, Content-Length to claim or None); anything else
    is 404. Every request's path is recorded. Shut down when the test ends."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    routes, requests = {}, []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, claimed = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if claimed is None else claimed))
            self.end_headers()
            self.wfile.write(body)  # HTTP/1.0: the connection closes after this, short or not

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}", routes=routes, requests=requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def md5(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()


def fetch(folder: Path, mirrors, files: dict[str, str]) -> None:
    download_files(folder, tuple(mirrors), files, "test data", progress=False, timeout=10)


def listing(folder: Path) -> list[str]:
    """Every name in the folder, hidden temporaries included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (one the system just handed out and took back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PAYLOAD = bytes(range(256)) * 40  # 10 kB


def test_a_good_download(server, tmp_path):
    server.routes["/m/a.bin"] = (PAYLOAD, None)
    server.routes["/m/b.bin"] = (b"second", None)
    fetch(tmp_path / "data", [server.url + "/m/"], {"a.bin": md5(PAYLOAD), "b.bin": md5(b"second")})
    assert listing(tmp_path / "data") == ["a.bin", "b.bin"]
    assert (tmp_path / "data" / "a.bin").read_bytes() == PAYLOAD
    fetch(tmp_path / "data", [server.url + "/m/"], {"a.bin": md5(PAYLOAD)})  # present: not fetched again
    assert server.requests == ["/m/a.bin", "/m/b.bin"]


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(server, tmp_path):
    server.routes["/m/a.bin"] = (PAYLOAD, None)
    with pytest.raises(UserError, match="MD5 .* does not match the official 0{32}") as info:
        fetch(tmp_path / "data", [server.url + "/m/"], {"a.bin": "0" * 32})
    assert "a.bin" in str(info.value) and str(tmp_path / "data") in str(info.value)
    assert listing(tmp_path / "data") == []


def test_an_interrupted_download_leaves_no_half_file(server, tmp_path):
    server.routes["/m/a.bin"] = (PAYLOAD[:4000], len(PAYLOAD))  # promises 10 kB, sends 4 kB, closes
    with pytest.raises(UserError, match="closed after 4,000 of 10,240 bytes"):
        fetch(tmp_path / "data", [server.url + "/m/"], {"a.bin": md5(PAYLOAD)})
    assert listing(tmp_path / "data") == []


@pytest.mark.parametrize("failure", ["missing", "truncated", "wrong bytes", "no server"])
def test_a_failing_first_mirror_falls_over_to_the_second(server, tmp_path, failure):
    if failure == "truncated":
        server.routes["/bad/a.bin"] = (PAYLOAD[:100], len(PAYLOAD))
    elif failure == "wrong bytes":
        server.routes["/bad/a.bin"] = (PAYLOAD[::-1], None)
    server.routes["/good/a.bin"] = (PAYLOAD, None)
    first = f"http://127.0.0.1:{closed_port()}/" if failure == "no server" else server.url + "/bad/"
    fetch(tmp_path / "data", [first, server.url + "/good/"], {"a.bin": md5(PAYLOAD)})
    assert listing(tmp_path / "data") == ["a.bin"] and (tmp_path / "data" / "a.bin").read_bytes() == PAYLOAD


def test_every_mirror_failing_is_one_sentence_naming_each(server, tmp_path):
    with pytest.raises(UserError) as info:
        fetch(tmp_path / "data", [server.url + "/one/", server.url + "/two/"], {"a.bin": md5(PAYLOAD)})
    message = str(info.value)
    assert "could not download a.bin" in message and "/one/" in message and "/two/" in message
    assert "404" in message and "\n" not in message
    assert listing(tmp_path / "data") == []


def test_a_named_dataset_is_downloaded_end_to_end(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    arrays = {IDX_FILES[0]: rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              IDX_FILES[1]: np.array([0, 1, 2, 3, 4, 5], np.uint8),
              IDX_FILES[2]: rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              IDX_FILES[3]: np.array([7, 9], np.uint8)}
    sums = {}
    for name, array in arrays.items():
        write_idx(mirror / name, array)
        payload = (mirror / name).read_bytes()
        server.routes[f"/mnist/{name}"] = (payload, None)
        sums[name] = md5(payload)
    mnist = dataclasses.replace(NAMED["mnist"], mirrors=(server.url + "/gone/", server.url + "/mnist/"), files=sums)
    monkeypatch.setitem(NAMED, "mnist", mnist)
    folder = tmp_path / "data" / "mnist"

    offline = DataConfig(source="mnist", data_dir=str(folder), download=False)
    with pytest.raises(UserError, match="MNIST is not in .*--data-dir"):
        load_data(offline, progress=False)
    assert server.requests == []

    config = DataConfig(source="mnist", data_dir=str(folder))
    dataset = load_data(config, progress=False)
    assert listing(folder) == sorted(IDX_FILES)  # the test split too, for `evaluate`; no temporaries
    assert np.array_equal(dataset.images[:, 0].numpy(), arrays[IDX_FILES[0]])
    assert dataset.labels.tolist() == [0, 1, 2, 3, 4, 5] and dataset.class_names == tuple("0123456789")
    fetched = len(server.requests)
    held_out = load_data(config, "test", progress=False)
    assert held_out.labels.tolist() == [7, 9] and len(server.requests) == fetched
    assert load_data(config, progress=False).labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert len(server.requests) == fetched  # all there: nothing fetched again


def test_a_named_dataset_whose_download_is_damaged_leaves_nothing(server, tmp_path, monkeypatch):
    write_idx(tmp_path / "x.gz", np.zeros((2, 28, 28), np.uint8))
    payload = (tmp_path / "x.gz").read_bytes()
    server.routes[f"/mnist/{IDX_FILES[0]}"] = (payload[:-10], len(payload))
    server.routes[f"/mnist/{IDX_FILES[1]}"] = (b"not the file", None)
    sums = dict.fromkeys(IDX_FILES, md5(payload))
    monkeypatch.setitem(NAMED, "mnist", dataclasses.replace(NAMED["mnist"], mirrors=(server.url + "/mnist/",),
                                                            files=sums))
    folder = tmp_path / "data"
    with pytest.raises(UserError, match="could not download train-images-idx3-ubyte.gz"):
        load_data(DataConfig(source="mnist", data_dir=str(folder)), progress=False)
    assert listing(folder) == []
