"""Sampling through an exported graph in onnxruntime (`sample --runtime onnxruntime`): GraphDenoiser is a
Denoiser whose `predict` runs the ONNX graph instead of the torch network, so every sampler, and classifier-free
guidance, work unchanged on top of it; a latent model's samples are decoded by its exported decoder graph
(OnnxGraph.decode), which generate() calls instead of the autoencoder's torch module (pipeline.Model.decode).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..diffusion import GaussianDiffusion
from ..errors import UserError
from ..files import read_file
from ..pipeline import Model
from ..samplers.denoiser import Denoiser
from .onnx_file import FORMAT, MAX_ONNX_BYTES, METADATA_KEY, decoder_file, onnx_bytes, require

DECODE_BATCH = 64  # latents decoded at a time: the decoder's activations, at the images' full size, are its largest


class GraphDenoiser(Denoiser):
    """A Denoiser whose network is an OnnxGraph. The samplers pass the network's time (the step index, possibly
    fractional); the graph takes the process's time, (index + 1) / T (diffusion.step_time)."""

    def predict(self, x_t, t, y, scales, alpha, sigma):
        n = x_t.shape[0]
        time = self.diffusion.step_time(t.double().cpu()).float()
        labels = y if y is not None else torch.full((n,), self.null_class or 0, dtype=torch.long)
        x0, eps = self.net.run(x_t.float().cpu().numpy(), time.numpy(), labels.cpu().numpy(),
                               None if scales is None else scales.float().cpu().numpy())
        return torch.from_numpy(eps).to(x_t.device), torch.from_numpy(x0).to(x_t.device)


def open_session(model: bytes | Path, name: str, threads: int | None):
    """An onnxruntime session of an ONNX file (its bytes or its path) on the CPU; one sentence naming `name` where
    onnxruntime cannot read it."""
    ort = require("onnxruntime", "the onnxruntime runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types for unreadable, damaged and unsupported files
        detail = str(err).strip().split("\n")[0][:200]
        raise UserError(f"{name} is not an ONNX model onnxruntime can run ({detail}).") from None


def decoder_beside(path: bytes | Path, latent) -> bytes:
    """The decoder file that the metadata (`latent`) of a latent model's graph file `path` names, read from beside
    the file (beside a link's target) and checked against the SHA-256 the metadata pins: a name that is not a plain
    file name, a missing, unreadable, damaged or other decoder is one sentence, as is a graph given as bytes."""
    if isinstance(path, bytes):
        raise UserError("the exported graph is a latent model's; give its decoder graph with it.")
    path, latent = Path(path), latent if isinstance(latent, dict) else {}
    name = latent.get("decoder")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".onnx"):
        raise UserError(f"{path} is a latent model's graph whose metadata names no decoder file ({name!r}); export "
                        "it again.")
    decoder = path.resolve().parent / name
    payload = read_file(decoder, MAX_ONNX_BYTES, f"{path} is a latent model's graph, decoded by {decoder}, which "
                        "its export wrote beside it, but that file", f"copy the decoder beside {path.name}, or export "
                        "again")
    if hashlib.sha256(payload).hexdigest() != latent.get("decoder_sha256"):
        raise UserError(f"{decoder} is not the decoder {path.name} was exported with (its SHA-256 is not the one "
                        f"pinned in {path.name}): it is damaged or another export's; export again.")
    return payload


class OnnxGraph:
    """An exported model in an onnxruntime session: `run(x, t, y, guidance)` -> (x0, eps) as numpy arrays, `decode`
    (a latent model's samples through its decoder graph), and `metadata`, the JSON stored in the file. A latent
    model's decoder is `decoder` (the file's bytes), or else the file its metadata names beside `model`."""

    denoiser = GraphDenoiser  # the graph brings the Denoiser that runs it (pipeline.denoiser)

    def __init__(self, model: bytes | Path, threads: int | None = None, decoder: bytes | None = None):
        name = "the exported graph" if isinstance(model, bytes) else str(model)
        self.session = open_session(model, name, threads)
        try:
            self.metadata = json.loads(self.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        except (KeyError, ValueError):
            self.metadata = None
        if not isinstance(self.metadata, dict) or self.metadata.get("format") != FORMAT:
            raise UserError(f"{name} is an ONNX model but not one tinydiffusion exported (it has no "
                            f"{METADATA_KEY} metadata).")
        self.inputs = {i.name for i in self.session.get_inputs()}
        latent = self.metadata.get("latent")
        if latent and decoder is None:
            decoder = decoder_beside(model, latent)
        self.decoder = open_session(decoder, f"the decoder of {name}", threads) if latent else None

    def run(self, x: np.ndarray, t: np.ndarray, y: np.ndarray, guidance: np.ndarray | None = None):
        feeds = {"x": x, "t": t, "y": y, "guidance": guidance}
        return self.session.run(["x0", "eps"], {k: v for k, v in feeds.items() if k in self.inputs})

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """What the sampler ended on -> images in [-1, 1]: a latent model's through its decoder graph (in batches of
        DECODE_BATCH), a pixel model's as they are."""
        if self.decoder is None:
            return x
        z = x.float().cpu().numpy()
        images = [self.decoder.run(["image"], {"z": z[i:i + DECODE_BATCH]})[0] for i in range(0, len(z), DECODE_BATCH)]
        return torch.from_numpy(np.concatenate(images)).to(x.device)


def load_onnx_model(path: str | Path, threads: int | None = None):
    """A Model from an exported file alone: its graph, and the config stored in its metadata (checked as a
    config.json is), which rebuilds the process exactly; it has no torch network (`net` is None)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} {'is not a regular file' if path.exists() else 'does not exist'}; give an .onnx file "
                        "that `tinydiffusion export` wrote.")
    graph = OnnxGraph(path, threads)
    config = RunConfig.from_dict(graph.metadata.get("config"))
    config.validate()
    net = config.net
    shape = [net.in_channels, net.image_size, net.image_size]
    x = next(i for i in graph.session.get_inputs() if i.name == "x") if "x" in graph.inputs else None
    if x is None or x.shape[1:] != shape or ("guidance" in graph.inputs) != net.guidance_input:
        described = f"{'x'.join(map(str, shape))} images{', with a guidance input' if net.guidance_input else ''}"
        raise UserError(f"{path} holds a graph its metadata does not describe (its config is for {described}); "
                        "export it again.")
    check_decoder(graph, config, path)
    return Model(None, GaussianDiffusion(config.diffusion), config, path, graph=graph)


def check_decoder(graph: OnnxGraph, config: RunConfig, path: Path) -> None:
    """A latent model's config and its decoder graph agree (z: the network's latents -> image: the run's images),
    and a pixel model's file names no decoder: one sentence otherwise."""
    net, data = config.net, config.data
    if graph.decoder is None and not data.autoencoder:
        return
    shapes = [] if graph.decoder is None else [graph.decoder.get_inputs()[0].shape[1:],
                                               graph.decoder.get_outputs()[0].shape[1:]]
    if shapes != [[net.in_channels, net.image_size, net.image_size], list(data.image_shape)]:
        raise UserError(f"{path} holds a graph and a decoder its metadata does not describe (its config is for "
                        f"{data.autoencoder or 'pixels'}, images {'x'.join(map(str, data.image_shape))}); export "
                        "it again.")


def onnx_graph(model, threads: int | None = None) -> OnnxGraph:
    """The model exported to ONNX in memory and opened in onnxruntime, a latent model's decoder with it."""
    require("onnxruntime", "the onnxruntime runtime")  # before the export's seconds
    decoder = decoder_file(model, "model.onnx")
    return OnnxGraph(onnx_bytes(model, decoder), threads, decoder and decoder[1])
