"""`tinydiffusion export --format web` (docs/export.md, "A web page"): the runtime's download against a real HTTP
server on 127.0.0.1 (a good one, and a wrong, short, huge or missing file, and hostile archives, each refused in one
sentence with nothing kept), the folder it writes, and, in headless Chromium, the page: it draws the images
tinydiffusion's own samplers draw through onnxruntime from the same noise, for the class asked, every request it
makes goes to the host that serves it, and the time per image is measured.

The runtime package (onnxruntime-web's npm tarball, 35 MB) is fetched once with `npm pack` into pytest's cache
(.pytest_cache); without npm or the registry the tests that need it are skipped with the reason."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import assert_error, cli, one_sentence

from tinydiffusion.errors import UserError
from tinydiffusion.export import web_page
from tinydiffusion.export.web_page import RUNTIME_FILES, RUNTIME_TARBALL_SHA256, RUNTIME_VERSION
from tinydiffusion.export_formats import EXPORT_MARKER
from tinydiffusion.files import sha256_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
CHROMEDRIVER = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/bin")


# --- the runtime package and local servers ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def runtime_package(pytestconfig, tmp_path_factory) -> Path:
    """onnxruntime-web's npm tarball, fetched once by npm into pytest's cache (or, without one, once per session)
    and checked against the pin."""
    cache = getattr(pytestconfig, "cache", None)
    folder = cache.mkdir("onnxruntime-web") if cache else tmp_path_factory.mktemp("onnxruntime-web")
    path = folder / f"onnxruntime-web-{RUNTIME_VERSION}.tgz"
    if not (path.is_file() and sha256_file(path) == RUNTIME_TARBALL_SHA256):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed, and the tests of the web page need onnxruntime-web's package")
        done = subprocess.run([npm, "pack", f"onnxruntime-web@{RUNTIME_VERSION}", "--pack-destination", str(folder)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not path.is_file():
            pytest.skip(f"npm pack onnxruntime-web@{RUNTIME_VERSION} failed: {done.stderr.strip()[-300:]}")
    assert sha256_file(path) == RUNTIME_TARBALL_SHA256
    return path


@contextlib.contextmanager
def serving(handler):
    """A threaded HTTP server on 127.0.0.1 with this handler class; yields its root URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def registry(monkeypatch):
    """A stand-in for the npm registry: `body` is served, claiming `length` bytes (None: its own length; -1: no
    length at all), at the URL the runtime is downloaded from, which points here; `requests` records each path."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = SimpleNamespace(body=b"", length=None, status=200, requests=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            state.requests.append(self.path)
            if state.status != 200:
                self.send_error(state.status)
                return
            self.send_response(200)
            if state.length != -1:  # -1: no Content-Length, the body ends when the connection closes
                self.send_header("Content-Length", str(len(state.body) if state.length is None else state.length))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args):
            pass

    with serving(Handler) as url:
        monkeypatch.setattr(web_page, "RUNTIME_URL", url + "/onnxruntime-web/-/onnxruntime-web-{version}.tgz")
        yield state


def cached_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


# --- the download ------------------------------------------------------------------------------------------------


def test_runtime_is_downloaded_once_checked_and_kept_in_the_cache(runtime_package, registry, private_cache):
    registry.body = runtime_package.read_bytes()
    files = web_page.runtime_files()
    assert registry.requests == [f"/onnxruntime-web/-/onnxruntime-web-{RUNTIME_VERSION}.tgz"]
    assert {name: sha256_file(path) for name, path in files.items()} == RUNTIME_FILES
    assert cached_files(private_cache) == sorted(f"onnxruntime-web/{RUNTIME_VERSION}/{n}" for n in RUNTIME_FILES)
    assert web_page.runtime_files() == files and len(registry.requests) == 1  # the second time, from the cache
    (files["ort.wasm.bundle.min.mjs"]).write_bytes(b"changed")  # a damaged cache is fetched again
    assert web_page.runtime_files() == files and len(registry.requests) == 2
    assert sha256_file(files["ort.wasm.bundle.min.mjs"]) == RUNTIME_FILES["ort.wasm.bundle.min.mjs"]


@pytest.mark.parametrize("case, fragment", [
    ("wrong", "does not match the pinned"), ("short", "closed after"), ("huge", "allowed"), ("claims-huge", "allowed"),
    ("missing", "not found"), ("no-server", "refused")])
def test_a_bad_download_is_one_sentence_and_leaves_nothing(registry, private_cache, monkeypatch, case, fragment):
    monkeypatch.setattr(web_page, "MAX_TARBALL_BYTES", 5000)
    registry.body = b"not the package " * 100  # 1,600 bytes
    if case == "short":
        registry.length = 4000
    elif case == "huge":
        registry.body, registry.length = b"x" * 6000, -1
    elif case == "claims-huge":
        registry.length = 10**9
    elif case == "missing":
        registry.status = 404
    elif case == "no-server":
        monkeypatch.setattr(web_page, "RUNTIME_URL", "http://127.0.0.1:9/onnxruntime-web-{version}.tgz")
    with pytest.raises(UserError) as err:
        web_page.runtime_files()
    one_sentence(err, "could not download", fragment, "by hand", str(web_page.runtime_tarball()))
    assert cached_files(private_cache) == []


def tgz(members: dict[str, bytes | str]) -> bytes:
    """A .tgz of regular files (bytes) and symbolic links (str: the target), under the names given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                archive.addfile(info)
            else:
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def pin(monkeypatch, payload: bytes, files: dict[str, bytes] | None = None) -> None:
    """Pin a hand-made package (and its files' contents) as if it were the real one."""
    monkeypatch.setattr(web_page, "RUNTIME_TARBALL_SHA256", hashlib.sha256(payload).hexdigest())
    if files is not None:
        monkeypatch.setattr(web_page, "RUNTIME_FILES", {n: hashlib.sha256(c).hexdigest() for n, c in files.items()})


RUNTIME_STAND_IN = {"ort.wasm.bundle.min.mjs": b"// a module", "ort-wasm-simd-threaded.wasm": b"\0asm\1\0\0\0"}
PACKAGED = {f"package/dist/{name}": content for name, content in RUNTIME_STAND_IN.items()}


@pytest.mark.parametrize("case, members", [
    ("traversal-only", {"../../evil.txt": b"evil", "/tmp/evil.txt": b"evil"}),
    ("link", {**PACKAGED, "package/dist/ort.wasm.bundle.min.mjs": "../../../../etc/passwd"}),
    ("changed", {**PACKAGED, "package/dist/ort-wasm-simd-threaded.wasm": b"\0asm changed"}),
])
def test_hostile_archives_are_refused_in_one_sentence(registry, private_cache, monkeypatch, tmp_path, case, members):
    """Even a package that passes the hash pin (here pinned by the test) yields only the pinned files, as files."""
    registry.body = tgz(members)
    pin(monkeypatch, registry.body, RUNTIME_STAND_IN)
    with pytest.raises(UserError) as err:
        web_page.runtime_files()
    one_sentence(err, "does not hold package/dist/", "pinned SHA-256")
    assert not any(tmp_path.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
    assert not (private_cache / "onnxruntime-web" / RUNTIME_VERSION).exists()


def test_an_archive_with_traversing_entries_yields_only_the_pinned_files(registry, private_cache, monkeypatch):
    registry.body = tgz({"../evil.txt": b"evil", "package/dist/../../../evil.txt": b"evil", **PACKAGED})
    pin(monkeypatch, registry.body, RUNTIME_STAND_IN)
    files = web_page.runtime_files()
    assert {name: path.read_bytes() for name, path in files.items()} == RUNTIME_STAND_IN
    assert cached_files(private_cache) == sorted(f"onnxruntime-web/{RUNTIME_VERSION}/{n}" for n in RUNTIME_STAND_IN)


@pytest.mark.parametrize("payload, fragment", [(b"saved by hand, but not the package", "is not onnxruntime-web"),
                                               (b"not gzip at all", "cannot be read as a .tgz")])
def test_a_package_saved_by_hand_is_checked(registry, private_cache, monkeypatch, payload, fragment):
    tarball = web_page.runtime_tarball()
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(payload)
    if "tgz" in fragment:
        pin(monkeypatch, payload)
    with pytest.raises(UserError) as err:
        web_page.runtime_files()
    one_sentence(err, fragment, str(tarball))
    assert registry.requests == []  # a package in place is never downloaded over


# --- the folder ---------------------------------------------------------------------------------------------------


def export(*args) -> str:
    """`tinydiffusion export ARGS` in this process; what it printed."""
    from tinydiffusion.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", "--format", "web", *map(str, args)]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def runtime_in_cache(runtime_package):
    """The package where a user saves it by hand (the session's cache): no test below downloads it."""
    if not web_page.runtime_folder().is_dir():
        web_page.runtime_tarball().parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runtime_package, web_page.runtime_tarball())
    return web_page.runtime_files()


@pytest.fixture(scope="module")
def teacher_site(trained_run, runtime_in_cache, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("teacher") / "site"
    export(trained_run, "--out", site)
    return site


def test_the_folder_holds_the_page_the_model_and_the_runtime_each_checked(teacher_site, trained_run):
    names = {"index.html", "tinydiffusion-web.js", "model.onnx", "model.json", "SHA256SUMS", EXPORT_MARKER,
             *RUNTIME_FILES}
    assert {p.name for p in teacher_site.iterdir()} == names
    assert json.loads((teacher_site / EXPORT_MARKER).read_text())["format"] == "web"
    sums = dict(reversed(line.split("  ")) for line in (teacher_site / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == names - {"SHA256SUMS", EXPORT_MARKER}
    assert all(sha256_file(teacher_site / name) == sha for name, sha in sums.items())
    html = (teacher_site / "index.html").read_text()
    integrity = json.loads(re.search(r'id="integrity">(.*?)</script>', html, re.S).group(1))
    assert integrity == {name: web_page.integrity((teacher_site / name).read_bytes())
                         for name in names - {"index.html", "SHA256SUMS", EXPORT_MARKER}}
    assert "@" not in re.sub(r"[\w.-]+@[\w.-]+", "", html)  # every placeholder filled
    for page in ("index.html", "tinydiffusion-web.js"):  # nothing names another host
        assert not re.search(r"\b(https?|wss?|ftp)://", (teacher_site / page).read_text()), page
    export(trained_run, "--out", teacher_site)  # an earlier export is replaced
    assert {p.name for p in teacher_site.iterdir()} == names


def test_refusals_at_the_command_line_write_nothing(trained_run, registry, private_cache, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own")
    code, _, err = cli(capsys, "export", trained_run, "--format", "web", "--out", mine)
    assert_error(code, err, "an export did not write")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    registry.status = 404  # no runtime in the cache, and none to download
    code, _, err = cli(capsys, "export", trained_run, "--format", "web", "--out", tmp_path / "site")
    assert_error(code, err, "could not download the browser runtime", "by hand")
    assert not (tmp_path / "site").exists() and cached_files(private_cache) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mine"]  # no temporary folder left


# --- the page, in headless Chromium -----------------------------------------------------------------------------


def page_noise(seed: int, image: int, draw: int, size: int) -> np.ndarray:
    """The page's noise (tinydiffusion-web.js, `gaussian`), in numpy."""
    m = 0xFFFFFFFF

    def mix(x):
        x = np.asarray(x, dtype=np.uint64)
        x = x ^ (x >> 16)
        x = (x * 0x7FEB352D) & m
        x = x ^ (x >> 15)
        x = (x * 0x846CA68B) & m
        return x ^ (x >> 16)

    key = int(mix((int(mix((int(mix(seed)) + image) & m)) + draw) & m))
    j = np.arange(size, dtype=np.uint64)
    u1 = ((mix((key + 2 * j) & m) >> 8) + 0.5) / 2**24
    u2 = ((mix((key + 2 * j + 1) & m) >> 8) + 0.5) / 2**24
    return (np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)).astype(np.float32)


def reference(site: Path, model, cls: int, seed: int, w: float, steps: int, n: int, monkeypatch) -> np.ndarray:
    """What the page should draw: tinydiffusion's own sampler (the metadata's) on its own levels, run through
    onnxruntime on the folder's model.onnx from the page's noise, and for a latent model decoded by the folder's
    decoder graph; 8-bit pixels, n x C x H x W."""
    import importlib

    import onnxruntime as ort

    from tinydiffusion.samplers import SAMPLERS

    consistency = importlib.import_module("tinydiffusion.samplers.consistency")  # the module, not its function

    session = ort.InferenceSession(str(site / "model.onnx"))
    meta = json.loads((site / "model.json").read_text())
    shape, size = meta["image_shape"], int(np.prod(meta["image_shape"]))
    y, null = np.full(n, cls), np.full(n, meta["null_class"])

    def denoise(x, k, alpha, sigma):
        t = np.full(n, meta["schedule"]["t"][k], np.float32)
        if "guidance" in meta["inputs"]:
            x0, eps = session.run(None, {"x": x, "t": t, "y": y, "guidance": np.full(n, w, np.float32)})
        elif w == 1:
            x0, eps = session.run(None, {"x": x, "t": t, "y": y})
        else:
            both = session.run(None, {"x": np.concatenate([x, x]), "t": np.concatenate([t, t]),
                                      "y": np.concatenate([y, null])})
            x0, eps = (uncond + w * (cond - uncond) for cond, uncond in (np.split(out, 2) for out in both))
        return eps, x0

    draws = iter(range(1, 100))
    monkeypatch.setattr(consistency, "gaussian_like", lambda x, generator: np.stack(
        [page_noise(seed, i, d, size) for d in [next(draws)] for i in range(n)]).reshape(x.shape))
    sampler = SAMPLERS[meta["sampler"]]
    noise = np.stack([page_noise(seed, i, 0, size) for i in range(n)]).reshape(n, *shape)
    x = sampler.walk(denoise, noise, sampler.levels(model.diffusion, steps))
    if meta["latent"]:
        x = ort.InferenceSession(str(site / meta["latent"]["decoder"])).run(None, {"z": np.float32(x)})[0]
    return np.clip(np.round((x + 1) * 127.5), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or a driver
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def static_host(site: Path):
    """The folder served as any static file host serves it; yields (URL, the paths asked for)."""
    asked = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            asked.append(self.path)

    with serving(functools.partial(Handler, directory=str(site))) as url:
        yield url, asked


class Page:
    """The exported page in the browser: set its controls, wait for the drawing, read the images."""

    def __init__(self, driver, url: str):
        self.driver = driver
        driver.get_log("performance")  # drop what came before
        driver.get(url + "/")
        self.status = self.wait(lambda text: "per image" in text, 120)

    def wait(self, done, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.driver.execute_script("return document.getElementById('status').textContent")
            if done(text):
                return text
            assert not text.startswith("error"), text
            time.sleep(0.05)
        raise AssertionError(f"the page did not draw in {timeout} s: {text}")

    def draw(self, **controls) -> tuple[str, np.ndarray]:
        """Set the controls as a user would (one `input` event), wait for that drawing; its status and pixels."""
        self.driver.execute_script("""
            for (const [id, value] of Object.entries(arguments[0])) document.getElementById(id).value = value;
            document.getElementById('seed').dispatchEvent(new Event('input'));""", controls)
        wanted = f"seed {controls['seed']}, "
        self.status = self.wait(lambda text: wanted in text and "per image" in text, 300)
        return self.status, self.pixels()

    def pixels(self) -> np.ndarray:
        data = self.driver.execute_script("""return [...document.querySelectorAll('#images canvas')].map(
            (c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data));""")
        return np.array(data, dtype=np.uint8)

    def requests(self) -> list[str]:
        """The URL of every request the page made (Chrome's network log), chrome:// and data: included."""
        events = (json.loads(entry["message"])["message"] for entry in self.driver.get_log("performance"))
        return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]


def as_rgba(pixels: np.ndarray) -> np.ndarray:
    """n x C x H x W 8-bit images as the page's canvases hold them: n x (H * W * 4), grey repeated, alpha 255."""
    n, c, h, w = pixels.shape
    rgb = np.repeat(pixels, 3, axis=1) if c == 1 else pixels
    return np.concatenate([rgb.transpose(0, 2, 3, 1), np.full((n, h, w, 1), 255, np.uint8)], 3).reshape(n, -1)


def check_same(drawn: np.ndarray, expected: np.ndarray) -> None:
    """The browser's runtime (WebAssembly) and onnxruntime's CPU code round differently in the last float32 bits:
    a pixel may move one 8-bit level where it sits on a rounding edge, and no more."""
    assert drawn.shape == expected.shape
    difference = np.abs(drawn.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())
    assert drawn.std() > 10  # not a blank canvas


def check_only_local(requests: list[str], url: str, asked: list[str], *more: str) -> None:
    """Every request went to the static host, for the page's files (and `more`, a latent model's decoder)."""
    remote = [r for r in requests if re.match(r"(https?|wss?|ftp):", r) and not r.startswith(url + "/")]
    assert remote == [], remote
    served = {"/", "/tinydiffusion-web.js", "/model.json", "/model.onnx", *(f"/{n}" for n in RUNTIME_FILES), *more}
    assert {r[len(url):] for r in requests if r.startswith(url)} == served
    assert set(asked) == served


def measure(page: Page, draws: int = 5, **controls) -> float:
    """The median of the page's own "ms per image" over several drawings (new seeds each)."""
    times = []
    for seed in range(100, 100 + draws):
        status, _ = page.draw(seed=seed, **controls)
        times.append(float(re.search(r"([\d.]+) ms per image", status).group(1)))
    return float(np.median(times))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fashion-mnist", "emoji"])
def test_a_bundled_student_page_draws_the_class_asked_locally(name, runtime_in_cache, browser, tmp_path,
                                                              monkeypatch):
    """The bundled models' 4-step students, grey and colour, as `export --model NAME --fast` writes them."""
    from tinydiffusion.bundled import bundled
    from tinydiffusion.pipeline import load_model

    site = tmp_path / "site"
    export("--model", name, "--fast", "--out", site)
    model = load_model(bundled(name).student(), "cpu")
    with static_host(site) as (url, asked):
        page = Page(browser, url)
        meta = json.loads((site / "model.json").read_text())
        assert page.status.startswith(f"4 images, class {meta['class_names'][0]}, seed 0, 4 steps, guidance 1.5: ")
        assert browser.execute_script("return document.getElementById('steps').disabled")  # a trajectory student
        for cls, seed, w in ((7, 3, 1.5), (1, 12, 2.5)):
            cls = min(cls, len(meta["class_names"]) - 1)
            status, drawn = page.draw(**{"class": cls, "seed": seed, "guidance": w, "count": 4})
            assert f"class {meta['class_names'][cls]}, seed {seed}, 4 steps, guidance {w:g}:" in status
            check_same(drawn, as_rgba(reference(site, model, cls, seed, w, 4, 4, monkeypatch)))
        ms_4, ms_1 = measure(page, **{"class": 7, "count": 4}), measure(page, **{"class": 7, "count": 1})
        check_only_local(page.requests(), url, asked)
    print(f"\nthe {name} 4-step student in headless Chromium: {ms_4:.0f} ms per image in batches of 4, "
          f"{ms_1:.0f} ms for one")


@pytest.mark.slow
def test_a_teacher_page_guides_and_refuses_a_changed_file(teacher_site, trained_run, browser, tmp_path, monkeypatch):
    """The smoke run's teacher: DPM-Solver++(2M) with classifier-free guidance in a batch of 2n, any steps; then
    the same page with each sampler the web format declares it runs; then a folder whose model was changed after the
    export."""
    from tinydiffusion.export_formats import EXPORT_FORMATS
    from tinydiffusion.pipeline import load_model

    model = load_model(trained_run, "cpu")
    site = tmp_path / "site"
    shutil.copytree(teacher_site, site)
    for sampler in EXPORT_FORMATS["web"].samplers():
        meta = json.loads((site / "model.json").read_text())
        if sampler != meta["sampler"]:  # the page as it would be for a model whose default is this sampler
            rewrite(site, "model.json", json.dumps({**meta, "sampler": sampler}).encode())
        with static_host(site) as (url, asked):
            page = Page(browser, url)
            for cls, seed, w, steps, n in ((3, 5, 2.0, 5, 4), (0, 9, 1.0, 3, 1)):
                status, drawn = page.draw(**{"class": cls, "seed": seed, "guidance": w, "steps": steps, "count": n})
                assert f"seed {seed}, {steps} steps, guidance {w:g}:" in status
                check_same(drawn, as_rgba(reference(site, model, cls, seed, w, steps, n, monkeypatch)))
            check_only_local(page.requests(), url, asked)
    with open(site / "model.onnx", "r+b") as f:  # one byte of the weights changed
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 1]))
    with static_host(site) as (url, _):
        browser.get(url + "/")
        deadline = time.monotonic() + 60
        while "error" not in (text := browser.find_element("id", "status").text) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert text.startswith("error: model.onnx could not be loaded, or is not the file"), text


@pytest.fixture(scope="module")
def latent_site(runtime_in_cache, tmp_path_factory) -> tuple[Path, Path]:
    """The page of a tiny latent model (TAEF2's latents of 32-px colour images, ten classes), and its checkpoint."""
    from test_export import tiny_model

    checkpoint = tiny_model(tmp_path_factory.mktemp("latent"), latent=True, num_classes=10)
    site = tmp_path_factory.mktemp("latent-site") / "site"
    assert "model.decoder.onnx" in export(checkpoint, "--out", site)
    return site, checkpoint


def test_a_latent_model_s_folder_holds_its_decoder_checked_and_its_licence(latent_site):
    site, _ = latent_site
    assert {"model.onnx", "model.json", "model.decoder.onnx", "LICENSE-taef2.md"} <= {p.name for p in site.iterdir()}
    latent = json.loads((site / "model.json").read_text())["latent"]
    assert latent["decoder"] == "model.decoder.onnx" and latent["image_shape"] == [3, 32, 32]
    assert latent["decoder_sha256"] == sha256_file(site / "model.decoder.onnx")
    html = (site / "index.html").read_text()
    integrity = json.loads(re.search(r'id="integrity">(.*?)</script>', html, re.S).group(1))
    assert integrity["model.decoder.onnx"] == web_page.integrity((site / "model.decoder.onnx").read_bytes())
    licence = (site / "LICENSE-taef2.md").read_text()
    assert "model.decoder.onnx holds the weights of taef2's decoder" in licence and "MIT License" in licence


@pytest.mark.slow
def test_a_latent_page_samples_latents_and_decodes_them(latent_site, browser, monkeypatch):
    """The page samples in the latent space and shows what the decoder graph makes of the result: tinydiffusion's
    sampler through onnxruntime, decoded by the same file, within one 8-bit level."""
    from tinydiffusion.pipeline import load_model

    site, checkpoint = latent_site
    model = load_model(checkpoint, "cpu")
    with static_host(site) as (url, asked):
        page = Page(browser, url)
        for cls, seed, w, steps, n in ((7, 3, 2.0, 4, 4), (0, 8, 1.0, 3, 1)):  # n: the page offers 1, 4, 8, 16
            status, drawn = page.draw(**{"class": cls, "seed": seed, "guidance": w, "steps": steps, "count": n})
            assert f"seed {seed}, {steps} steps, guidance {w:g}:" in status and drawn.shape == (n, 32 * 32 * 4)
            check_same(drawn, as_rgba(reference(site, model, cls, seed, w, steps, n, monkeypatch)))
        check_only_local(page.requests(), url, asked, "/model.decoder.onnx")


def rewrite(site: Path, name: str, payload: bytes) -> None:
    """Replace a file of the folder and its SHA-256 in index.html, as an export would have written them."""
    html = (site / "index.html").read_text()
    html = html.replace(web_page.integrity((site / name).read_bytes()), web_page.integrity(payload))
    (site / name).write_bytes(payload)
    (site / "index.html").write_text(html)
