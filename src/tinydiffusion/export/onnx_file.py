"""`tinydiffusion export --format onnx`: a model as one ONNX file that any runtime can sample from: the graph
(graph.DenoiserGraph, (x, t, y[, guidance]) -> (x0, eps)) and one metadata entry, `tinydiffusion`, a JSON object
with everything else a sampler needs. docs/reference/onnx.md is the contract.

A latent model's file is its denoiser, over the latents, and a second file beside it holds its decoder
(graph.DecoderGraph, z -> image), named after the first (model.onnx -> model.decoder.onnx) and pinned by its
SHA-256 in the first's metadata (`latent`): the two are written together, so that a failure leaves both as they
were, and a runtime refuses a decoder that is not the one exported with the denoiser.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import warnings
from contextlib import ExitStack
from pathlib import Path

import torch

from ..autoencoders import autoencoder_entry
from ..errors import UserError
from ..files import atomic_file
from ..pipeline import Model, sampling_settings
from ..version import __version__
from .graph import DecoderGraph, DenoiserGraph

OPSET = 18  # run by onnxruntime and by onnxruntime-web (1.17 onwards)
FORMAT = "tinydiffusion-onnx"
FORMAT_VERSION = 1
METADATA_KEY = "tinydiffusion"
MAX_ONNX_BYTES = 2**31 - 2**24  # one ONNX file is a protobuf of under 2 GiB; the graph's own size rides on top
EXAMPLE_BATCH = 2  # the batch traced; torch.export would fix a batch of 1 as a constant
DECODER_SUFFIX = ".decoder.onnx"  # a latent model's decoder file: model.onnx -> model.decoder.onnx


def require(module: str, what: str):
    """Import an optional dependency, or say in one sentence how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the {module} package; install it with pip install 'tinydiffusion[onnx]'.") \
            from None


def graph_inputs(model: Model) -> list[str]:
    return ["x", "t", "y", "guidance"] if model.config.net.guidance_input else ["x", "t", "y"]


def latent_entry(model: Model, decoder: tuple[str, bytes] | None) -> dict | None:
    """The metadata's `latent` entry: for a latent model, its autoencoder, the decoded images' shape, and the
    decoder file (`decoder`: its name beside the graph, and its bytes, which the entry pins by their SHA-256);
    None for a pixel model."""
    data = model.config.data
    if not data.autoencoder:
        return None
    if decoder is None:
        raise ValueError("a latent model's metadata names its decoder file; give its name and bytes")
    return {"autoencoder": data.autoencoder, "image_shape": list(data.image_shape), "decoder": decoder[0],
            "decoder_sha256": hashlib.sha256(decoder[1]).hexdigest(), "decoder_inputs": ["z"],
            "decoder_outputs": ["image"],
            "decode": "run the decoder once on the sampler's result x0 (z: N x image_shape, the network's space); "
                      "image is N x latent.image_shape in [-1, 1] (the run's standardisation is undone inside)"}


def metadata(model: Model, decoder: tuple[str, bytes] | None = None) -> dict:
    """What a sampler needs besides the graph, as the JSON stored in the file (docs/reference/onnx.md); for a
    latent model `decoder` is its decoder file's name and bytes (decoder_file)."""
    config, T = model.config, model.diffusion.num_timesteps
    sampler, steps, guidance = sampling_settings(model)
    ab, student = model.diffusion.alphas_cumprod, config.distill
    shown = "the decoder's image" if config.data.autoencoder else "x0"
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tinydiffusion_version": __version__,
        "inputs": graph_inputs(model), "outputs": ["x0", "eps"],
        "image_shape": [config.net.in_channels, config.net.image_size, config.net.image_size],
        "pixels": f"{shown} is in [-1, 1]: pixel = round((value + 1) * 127.5), clipped to [0, 255]",
        "latent": latent_entry(model, decoder),
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


def exported_proto(module: torch.nn.Module, example: tuple, inputs: list[str], outputs: list[str], what: str):
    """`module` traced at `example` (its first dimension, the batch, left dynamic) as an ONNX ModelProto; one
    sentence naming `what` where the exporter cannot write it."""
    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")  # torch's exporter writes the graph with it
    batch = torch.export.Dim("batch")
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        with warnings.catch_warnings():  # the exporter's notes on its own internals say nothing about this model
            warnings.simplefilter("ignore")
            exporter_log.setLevel(logging.ERROR)
            program = torch.onnx.export(module.cpu().eval(), example, dynamo=True, opset_version=OPSET,
                                        verbose=False, input_names=inputs, output_names=outputs,
                                        dynamic_shapes=tuple({0: batch} for _ in example))
    except Exception as err:  # the exporter's failures have no common type; its first line says what
        detail = str(err).strip().split("\n")[0][:300]
        raise UserError(f"{what} cannot be written as an ONNX graph ({type(err).__name__}: {detail}).") from None
    finally:
        exporter_log.setLevel(level)
    return program.model_proto


def onnx_bytes(model: Model, decoder: tuple[str, bytes] | None = None) -> bytes:
    """The model as an ONNX file's bytes: the graph (DenoiserGraph) with its metadata; for a latent model
    `decoder` is the name and bytes of the decoder file beside it (decoder_file), which the metadata pins."""
    onnx = require("onnx", "ONNX export")
    size = sum(p.numel() * p.element_size() for p in model.net.state_dict().values())
    if size > MAX_ONNX_BYTES:
        raise UserError(f"the network's weights are {size / 2**30:.1f} GiB, more than one ONNX file holds (2 GiB).")
    net_cfg = model.config.net
    meta = metadata(model, decoder)  # first: it refuses a latent model's graph without its decoder
    graph = DenoiserGraph(model.net, model.diffusion, net_cfg.guidance_input)
    n = EXAMPLE_BATCH
    example = (torch.zeros(n, net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size),
               torch.full((n,), 0.5), torch.full((n,), net_cfg.num_classes, dtype=torch.long))
    example += (torch.ones(n),) if net_cfg.guidance_input else ()
    proto = exported_proto(graph, example, graph_inputs(model), ["x0", "eps"], "this network")
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(meta)})
    proto.doc_string = f"tinydiffusion {__version__}: {model.config.name}, (x, t, y) -> (x0, eps); " \
                       "docs/reference/onnx.md"
    return proto.SerializeToString()


def decoder_name(name: str) -> str:
    """The name of a latent model's decoder file beside its graph file `name`: model.onnx -> model.decoder.onnx."""
    return f"{Path(name).stem}{DECODER_SUFFIX}"


def decoder_file(model: Model, name: str) -> tuple[str, bytes] | None:
    """A latent model's decoder file beside its graph file `name`: its name (decoder_name) and its bytes, the graph
    z (N x c x h x w, the network's space) -> image (N x 3 x H x W in [-1, 1]) with its weights' licence in its
    metadata; None for a pixel model."""
    data, net_cfg = model.config.data, model.config.net
    if not data.autoencoder:
        return None
    onnx = require("onnx", "ONNX export")
    example = (torch.zeros(EXAMPLE_BATCH, net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size),)
    proto = exported_proto(DecoderGraph(data), example, ["z"], ["image"], f"{data.autoencoder}'s decoder")
    onnx.helper.set_model_props(proto, {"license": autoencoder_entry(data.autoencoder).code().licence()})
    proto.doc_string = f"tinydiffusion {__version__}: {data.autoencoder}'s decoder for {model.config.name}, " \
                       "z -> image; docs/reference/onnx.md"
    return decoder_name(name), proto.SerializeToString()


def written_through(out: Path) -> Path:
    """Where an export's file named `out` is written: `out`, or where it links to (renamed over, a link would become
    a file of its own and leave its target as it was) where that is an .onnx file; a link to any other file is
    refused, since that file is not an earlier export, and so is a folder."""
    target = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    if target != Path(out) and target.suffix.lower() != ".onnx":
        raise UserError(f"{out} is a link to {target}, which is not an .onnx file; give the file itself or another "
                        "name.")
    if target.is_dir():
        raise UserError(f"{out} is a folder, where the export writes a file; move it or give another --out.")
    return target


def write_files(files: dict[Path, bytes]) -> None:
    """Write each file to a temporary file beside it and, only once all are written, rename each over its own (in
    the order given): a failure while writing leaves every file as it was."""
    with ExitStack() as renames:  # unwinds last-in first-out: entered in reverse, the renames go in order
        temporaries = {renames.enter_context(atomic_file(path)): files[path] for path in reversed(list(files))}
        for tmp, payload in temporaries.items():
            tmp.write_bytes(payload)


def write_onnx(model: Model, out: Path) -> dict[Path, int]:
    """Write the model's ONNX file to `out` and, for a latent model, its decoder file beside it (both through their
    links, written_through), together (write_files: a failure leaves what was there); returns each file's size. The
    decoder is renamed into place first, so that the graph naming it is never there before it."""
    target = written_through(out)  # both places checked first: the export takes seconds
    beside = written_through(target.with_name(decoder_name(target.name))) if model.config.data.autoencoder else None
    decoder = decoder_file(model, target.name)
    files = {beside: decoder[1]} if decoder else {}
    files[target] = onnx_bytes(model, decoder)
    write_files(files)
    return {path: len(payload) for path, payload in files.items()}


def export_onnx(model: Model, out: Path) -> str:
    """`export --format onnx` (export_formats.py): the file, and a phrase saying what it holds."""
    sizes = list(write_onnx(model, out).items())  # a latent model's decoder first, then the graph
    phrase = f"{out} ({sizes[-1][1] / 1e6:.1f} MB; inputs {', '.join(graph_inputs(model))}; outputs x0, eps"
    if len(sizes) == 2:
        phrase += f"; its decoder beside it: {sizes[0][0].name}, {sizes[0][1] / 1e6:.1f} MB"
    return phrase + ")"
