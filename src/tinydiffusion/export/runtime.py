"""Sampling through an exported graph in onnxruntime (`sample --runtime onnxruntime`): GraphDenoiser is a
Denoiser whose `predict` runs the ONNX graph instead of the torch network, so every sampler, and classifier-free
guidance, work unchanged on top of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..diffusion import GaussianDiffusion
from ..errors import UserError
from ..pipeline import Model
from ..samplers.denoiser import Denoiser
from .onnx_file import FORMAT, METADATA_KEY, onnx_bytes, require


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


class OnnxGraph:
    """An exported model in an onnxruntime session: `run(x, t, y, guidance)` -> (x0, eps) as numpy arrays, and
    `metadata`, the JSON stored in the file."""

    denoiser = GraphDenoiser  # the graph brings the Denoiser that runs it (pipeline.denoiser)

    def __init__(self, model: bytes | Path, threads: int | None = None):
        ort = require("onnxruntime", "the onnxruntime runtime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only
        name = "the exported graph" if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable, damaged and unsupported files
            detail = str(err).strip().split("\n")[0][:200]
            raise UserError(f"{name} is not an ONNX model onnxruntime can run ({detail}).") from None
        try:
            self.metadata = json.loads(self.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        except (KeyError, ValueError):
            self.metadata = None
        if not isinstance(self.metadata, dict) or self.metadata.get("format") != FORMAT:
            raise UserError(f"{name} is an ONNX model but not one tinydiffusion exported (it has no "
                            f"{METADATA_KEY} metadata).")
        self.inputs = {i.name for i in self.session.get_inputs()}

    def run(self, x: np.ndarray, t: np.ndarray, y: np.ndarray, guidance: np.ndarray | None = None):
        feeds = {"x": x, "t": t, "y": y, "guidance": guidance}
        return self.session.run(["x0", "eps"], {k: v for k, v in feeds.items() if k in self.inputs})


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
    return Model(None, GaussianDiffusion(config.diffusion), config, path, graph=graph)


def onnx_graph(model, threads: int | None = None) -> OnnxGraph:
    """The model exported to ONNX in memory and opened in onnxruntime."""
    require("onnxruntime", "the onnxruntime runtime")  # before the export's seconds
    return OnnxGraph(onnx_bytes(model), threads)
