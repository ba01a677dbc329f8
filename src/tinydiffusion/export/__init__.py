"""Running a model outside tinydiffusion's torch code: one ONNX file with its metadata (onnx_file.py, contract in
docs/reference/onnx.md), the graph in it (graph.py), and sampling through that file with onnxruntime (runtime.py)."""

from .graph import DenoiserGraph
from .onnx_file import METADATA_KEY, OPSET, metadata, onnx_bytes, write_onnx
from .runtime import GraphDenoiser, OnnxGraph, load_onnx_model, onnx_graph

__all__ = ["METADATA_KEY", "OPSET", "DenoiserGraph", "GraphDenoiser", "OnnxGraph", "load_onnx_model", "metadata",
           "onnx_bytes", "onnx_graph", "write_onnx"]
