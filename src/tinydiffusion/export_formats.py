"""The formats `tinydiffusion export` writes, by name: a file with a suffix or a folder, what it is for, which
samplers it runs (as their entries say), and its writer as "module:function", imported only when it runs, so that
`export --help` answers without torch. A new format is one module in export/ plus one entry here.

The writer is called as write(model, out: Path) -> str, the model on the CPU and `out` checked to be writable, and
returns what it wrote in a phrase for the command line ("model.onnx (1.8 MB; inputs x, t, y; outputs x0, eps)"). A
file format writes `out` atomically (a failure leaves what was there); a folder format writes through
export_folder(), which replaces only an earlier export's own files, never the model it reads."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from .samplers import SAMPLERS, Sampler
from .version import __version__

# A folder format's folder holds this file (JSON: {"format": name, "tinydiffusion": version, "files": {path: its
# SHA-256}}), so that a later export may replace the files it lists, and never a file or folder of the user's own
# (files.export_directory).
EXPORT_MARKER = "tinydiffusion-export.json"


@contextmanager
def export_folder(model, out: Path, name: str) -> Iterator[Path]:
    """A staging folder to fill with format `name`'s files, which then replace an earlier export's in `out`
    (files.export_directory); refused first where `out` is, holds or lies inside the model's own files."""
    from .files import check_apart, export_directory

    check_apart(out, [model.source] if model.source else [])
    with export_directory(out, EXPORT_MARKER, {"format": name, "tinydiffusion": __version__}) as stage:
        yield stage


class ExportFormat(NamedTuple):
    suffix: str | None   # the file's suffix (".onnx"); None: the format is a folder
    default_out: str     # --out when none is given
    help: str            # one phrase for `export --help`
    writer: str          # "module:function", relative to the tinydiffusion package
    runs: Callable[[Sampler], bool]  # whether a model it holds can sample with a sampler (the sampler's entry says)

    def samplers(self) -> list[str]:
        """The samplers a model in this format can sample with: one whose default sampler is another is refused."""
        return [name for name, sampler in SAMPLERS.items() if self.runs(sampler)]

    def write(self, model, out) -> str:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(module, "tinydiffusion"), function)(model, out)


EXPORT_FORMATS = {
    "onnx": ExportFormat(".onnx", "model.onnx", "one .onnx file: the denoiser graph and its metadata (a latent "
                         "model's decoder in a second beside it)", ".export.onnx_file:export_onnx",
                         lambda sampler: True),
    "web": ExportFormat(None, "site", "a static web page that samples the model in the browser (onnxruntime-web)",
                        ".export.web_page:export_web", lambda sampler: sampler.web),
    "diffusers": ExportFormat(None, "model-diffusers", "a folder diffusers loads: DiffusionPipeline.from_pretrained("
                              "FOLDER, trust_remote_code=True)", ".export.diffusers_folder:write_diffusers",
                              lambda sampler: sampler.diffusers_order is not None),
}
