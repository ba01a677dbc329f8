"""The formats `tinydiffusion export` writes, by name: what each writes (one file with a suffix, or a folder), what
it is for, and the function that writes it, named as "module:function" and imported only when it runs, so that
`export --help` answers without torch. A new format is one module in export/ plus one entry here.

The writer is called as write(model, out: Path) -> str, with the model loaded on the CPU and `out` checked to be
writable; it writes `out` atomically (a failure leaves what was there) and returns what it wrote, in a phrase for
the command line ("model.onnx (1.8 MB; inputs x, t, y; outputs x0, eps)")."""

from __future__ import annotations

import importlib
from typing import NamedTuple

# A folder format writes this file into its folder (JSON: {"format": name, "tinydiffusion": version}), so that a
# later export may replace the folder, and never a folder of the user's own.
EXPORT_MARKER = "tinydiffusion-export.json"


class ExportFormat(NamedTuple):
    suffix: str | None   # the file's suffix (".onnx"); None: the format is a folder
    default_out: str     # --out when none is given
    help: str            # one phrase for `export --help`
    writer: str          # "module:function", relative to the tinydiffusion package

    def write(self, model, out) -> str:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(module, "tinydiffusion"), function)(model, out)


EXPORT_FORMATS = {
    "onnx": ExportFormat(".onnx", "model.onnx", "one .onnx file: the denoiser graph and its metadata",
                         ".export.onnx_file:export_onnx"),
    "web": ExportFormat(None, "site", "a static web page that samples the model in the browser (onnxruntime-web)",
                        ".export.web_page:export_web"),
    "diffusers": ExportFormat(None, "model-diffusers", "a folder diffusers loads: DiffusionPipeline.from_pretrained("
                              "FOLDER, trust_remote_code=True)", ".export.diffusers_folder:export_diffusers"),
}
