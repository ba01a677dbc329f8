"""`tinydiffusion export --format web`: a static folder that samples the model in a browser, with nothing but a
static file host behind it (docs/reference/web-page.md lists its files and what is checked). onnxruntime-web is not
in tinydiffusion's package (the .wasm alone is 15 MB): the first web export downloads its npm package once, checks
it against the pinned SHA-256, and keeps the two files the page loads in the cache (files.cache_dir()).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tarfile
from html import escape as html_escape
from importlib import resources
from pathlib import Path

from ..autoencoders import licence_file
from ..data.download import DownloadFailed, download
from ..errors import UserError
from ..export_formats import EXPORT_FORMATS, export_folder
from ..files import atomic_directory, cache_dir, sha256_file
from ..pipeline import sampling_settings
from .onnx_file import decoder_file, metadata, onnx_bytes

RUNTIME_VERSION = "1.31.1"  # onnxruntime-web on npm; its MIT notice is the first lines of the module
RUNTIME_URL = "https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{version}.tgz"
RUNTIME_TARBALL_SHA256 = "bdccdb9fbb9ab537247c0c734e9b1d2b1b338b4f2a09faa58f0dc1cfa27c312c"
RUNTIME_FILES = {  # the files of the package's dist/ the page loads, by their SHA-256
    "ort.wasm.bundle.min.mjs": "51bd7168175767324ab0acfcfc4ca94a096a3826e3ebac9ccc4f195eb865f8dd",
    "ort-wasm-simd-threaded.wasm": "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d",
}
MAX_TARBALL_BYTES = 64 * 2**20  # the package is 35 MB
DOWNLOAD_TIMEOUT_S = 60


# --- the runtime: downloaded once, checked, kept in the cache -------------------------------------------------


def runtime_folder() -> Path:
    return cache_dir() / "onnxruntime-web" / RUNTIME_VERSION


def runtime_tarball() -> Path:
    """Where the npm package is downloaded to (or saved by hand) before its files are taken out."""
    return cache_dir() / "onnxruntime-web" / f"onnxruntime-web-{RUNTIME_VERSION}.tgz"


def runtime_files() -> dict[str, Path]:
    """The runtime's files in the cache, each checked against its pinned SHA-256; fetched first if missing."""
    folder = runtime_folder()
    if not all((folder / name).is_file() and sha256_file(folder / name) == sha for name, sha in RUNTIME_FILES.items()):
        tarball = runtime_tarball()
        if not tarball.is_file():
            download_runtime(tarball)
        extract_runtime(tarball, folder)
        tarball.unlink()  # 35 MB the cache need not keep: the two files are what the page uses
    return {name: folder / name for name in RUNTIME_FILES}


def download_runtime(target: Path) -> None:
    """Download the npm package to `target` (data/download.py: its length and pinned SHA-256 checked before it is
    renamed into place, so a refused or broken download leaves nothing)."""
    url = RUNTIME_URL.format(version=RUNTIME_VERSION)
    try:
        download(url, target, "sha256", RUNTIME_TARBALL_SHA256, "pinned", MAX_TARBALL_BYTES, timeout=DOWNLOAD_TIMEOUT_S)
    except DownloadFailed as err:
        raise UserError(f"could not download the browser runtime onnxruntime-web {RUNTIME_VERSION} from {url} "
                        f"({err}); download that file by hand and save it as {target}.") from None


def extract_runtime(tarball: Path, folder: Path) -> None:
    """Take the pinned files out of the npm package into `folder`: only those, by their exact names in the
    archive, each a regular file with its pinned SHA-256, written under names chosen here (never the archive's
    own paths, so no entry can write elsewhere)."""
    if tarball.stat().st_size > MAX_TARBALL_BYTES or sha256_file(tarball) != RUNTIME_TARBALL_SHA256:
        raise UserError(f"{tarball} is not onnxruntime-web {RUNTIME_VERSION}'s npm package (its SHA-256 is not the "
                        f"pinned one); delete it and export again to download it.")
    wanted = {f"package/dist/{name}": name for name in RUNTIME_FILES}
    found = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile() and member.size <= MAX_TARBALL_BYTES:
                    found[wanted[member.name]] = archive.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as err:
        raise UserError(f"{tarball} cannot be read as a .tgz archive ({err}); delete it and export again.") from None
    for name, sha in RUNTIME_FILES.items():
        if name not in found or hashlib.sha256(found[name]).hexdigest() != sha:
            raise UserError(f"{tarball} does not hold package/dist/{name} as a file with the pinned SHA-256; delete "
                            f"it and export again.")
    with atomic_directory(folder, replace=True) as tmp:
        for name, payload in found.items():
            (tmp / name).write_bytes(payload)


# --- the folder -----------------------------------------------------------------------------------------------


def integrity(payload: bytes) -> str:
    """A subresource-integrity value: what a browser checks a fetched file against."""
    return "sha256-" + base64.b64encode(hashlib.sha256(payload).digest()).decode()


def model_files(model) -> dict[str, bytes]:
    """The model's files, by name: model.onnx and its metadata as model.json; for a latent model, its decoder graph
    beside it (onnx_file.decoder_file) and the decoder's licence."""
    decoder = decoder_file(model, "model.onnx")
    meta = json.dumps(metadata(model, decoder), indent=1)
    files = {"model.onnx": onnx_bytes(model, decoder), "model.json": meta.encode()}
    if decoder:
        files.update([decoder, licence_file(model.config.data.autoencoder, decoder[0])])
    return files


def site_files(model) -> dict[str, bytes]:
    """Every file of the folder, by name, index.html holding the integrity of each file the page fetches."""
    runs = EXPORT_FORMATS["web"].samplers()  # those tinydiffusion-web.js implements, as their entries say
    sampler = sampling_settings(model)[0]
    if sampler not in runs:
        raise UserError(f"the web page samples with {', '.join(runs)}, not this model's {sampler}.")
    runtime = {name: path.read_bytes() for name, path in runtime_files().items()}  # first: it may be refused
    files = {**model_files(model), **runtime}
    page = resources.files("tinydiffusion.export") / "web"
    files["tinydiffusion-web.js"] = (page / "tinydiffusion-web.js").read_bytes()
    checked = {name: integrity(payload) for name, payload in files.items()}
    runtime_module = next(name for name in RUNTIME_FILES if name.endswith(".mjs"))
    importmap = json.dumps({"imports": {"onnxruntime-web": f"./{runtime_module}"},
                            "integrity": {f"./{runtime_module}": checked[runtime_module]}})
    fills = {"@TITLE@": html_escape(f"tinydiffusion: {model.config.name}"), "@IMPORTMAP@": importmap,
             "@IMPORTMAP_HASH@": integrity(importmap.encode()), "@INTEGRITY@": json.dumps(checked, indent=1),
             "@SCRIPT_INTEGRITY@": checked["tinydiffusion-web.js"]}
    html = (page / "index.html").read_text(encoding="utf-8")
    html = re.sub("@[A-Z_]+@", lambda match: fills[match.group()], html)  # one pass: a name cannot add a hole
    files["index.html"] = html.encode()
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(payload).hexdigest()}  {name}\n"
                                  for name, payload in sorted(files.items())).encode()
    return files


def export_web(model, out: Path) -> str:
    """`export --format web` (export_formats.py): the folder, and a phrase saying what it holds."""
    with export_folder(model, out, "web") as tmp:
        files = site_files(model)
        for name, payload in files.items():
            (tmp / name).write_bytes(payload)
    size, graphs = sum(map(len, files.values())), ", ".join(name for name in files if name.endswith(".onnx"))
    return (f"{out}/ ({size / 1e6:.1f} MB: index.html, {graphs}, onnxruntime-web {RUNTIME_VERSION}); serve it "
            f"with any static file server, e.g. python -m http.server --bind 127.0.0.1 -d {out}")
