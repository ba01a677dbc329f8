"""`tinydiffusion export --format onnx`: a model as one ONNX file that any runtime can sample from: the graph
(graph.DenoiserGraph, (x, t, y[, guidance]) -> (x0, eps)) and one metadata entry, `tinydiffusion`, a JSON object
with everything else a sampler needs. docs/reference/onnx.md is the contract.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import warnings
from pathlib import Path

import torch

from ..errors import UserError
from ..files import atomic_write_bytes
from ..pipeline import Model, sampling_settings
from ..version import __version__
from .graph import DenoiserGraph

OPSET = 18  # run by onnxruntime and by onnxruntime-web (1.17 onwards)
FORMAT = "tinydiffusion-onnx"
FORMAT_VERSION = 1
METADATA_KEY = "tinydiffusion"
MAX_ONNX_BYTES = 2**31 - 2**24  # one ONNX file is a protobuf of under 2 GiB; the graph's own size rides on top
EXAMPLE_BATCH = 2  # the batch traced; torch.export would fix a batch of 1 as a constant


def require(module: str, what: str):
    """Import an optional dependency, or say in one sentence how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the {module} package; install it with pip install 'tinydiffusion[onnx]'.") \
            from None


def graph_inputs(model: Model) -> list[str]:
    return ["x", "t", "y", "guidance"] if model.config.net.guidance_input else ["x", "t", "y"]


def metadata(model: Model) -> dict:
    """What a sampler needs besides the graph, as the JSON stored in the file (docs/reference/onnx.md)."""
    config, T = model.config, model.diffusion.num_timesteps
    sampler, steps, guidance = sampling_settings(model)
    ab, student = model.diffusion.alphas_cumprod, config.distill
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tinydiffusion_version": __version__,
        "inputs": graph_inputs(model), "outputs": ["x0", "eps"],
        "image_shape": [config.net.in_channels, config.net.image_size, config.net.image_size],
        "pixels": "x0 is in [-1, 1]: pixel = round((x0 + 1) * 127.5), clipped to [0, 255]",
        "class_names": list(model.class_names), "null_class": config.net.num_classes,
        "objective": config.diffusion.objective,
        "schedule": {
            "name": config.diffusion.schedule, "timesteps": T, "t": [(k + 1) / T for k in range(T)],
            "alpha": ab.sqrt().tolist(), "sigma": (1 - ab).sqrt().tolist(),
            "between": "linear in log(sigma / alpha) between two steps; below the first step, the first step's",
        },
        "sampler": sampler, "steps": steps, "guidance": guidance,
        "guidance_range": [student.guidance_min, student.guidance_max] if student.steps else None,
        "config": dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir="")).to_dict(),
    }


def onnx_bytes(model: Model) -> bytes:
    """The model as an ONNX file's bytes: the graph (DenoiserGraph) with its metadata."""
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")  # torch's exporter writes the graph with it
    size = sum(p.numel() * p.element_size() for p in model.net.state_dict().values())
    if size > MAX_ONNX_BYTES:
        raise UserError(f"the network's weights are {size / 2**30:.1f} GiB, more than one ONNX file holds (2 GiB).")
    net_cfg = model.config.net
    graph = DenoiserGraph(model.net, model.diffusion, net_cfg.guidance_input).cpu().eval()
    n = EXAMPLE_BATCH
    example = (torch.zeros(n, net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size),
               torch.full((n,), 0.5), torch.full((n,), net_cfg.num_classes, dtype=torch.long))
    example += (torch.ones(n),) if net_cfg.guidance_input else ()
    batch = torch.export.Dim("batch")
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        with warnings.catch_warnings():  # the exporter's notes on its own internals say nothing about this model
            warnings.simplefilter("ignore")
            exporter_log.setLevel(logging.ERROR)
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=OPSET, verbose=False,
                                        input_names=graph_inputs(model), output_names=["x0", "eps"],
                                        dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as err:  # the exporter's failures have no common type; its first line says what
        detail = str(err).strip().split("\n")[0][:300]
        raise UserError(f"this network cannot be written as an ONNX graph ({type(err).__name__}: {detail}).") \
            from None
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata(model))})
    proto.doc_string = f"tinydiffusion {__version__}: {model.config.name}, (x, t, y) -> (x0, eps); " \
                       "docs/reference/onnx.md"
    return proto.SerializeToString()


def write_onnx(model: Model, out: Path) -> int:
    """Write the model's ONNX file to `out` atomically (a failure leaves what was there); returns its size. A link is
    written through (renamed over, it would become a file of its own and leave its target as it was), where it names
    an .onnx file: a link to any other file is refused, since that file is not an earlier export."""
    target = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    if target != Path(out) and target.suffix.lower() != ".onnx":
        raise UserError(f"{out} is a link to {target}, which is not an .onnx file; give the file itself or another "
                        "name.")
    payload = onnx_bytes(model)
    atomic_write_bytes(target, payload)
    return len(payload)


def export_onnx(model: Model, out: Path) -> str:
    """`export --format onnx` (export_formats.py): the file, and a phrase saying what it holds."""
    size = write_onnx(model, out)
    return f"{out} ({size / 1e6:.1f} MB; inputs {', '.join(graph_inputs(model))}; outputs x0, eps)"
