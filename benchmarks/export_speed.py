"""Export speed: one evaluation of a model's exported graph, (x, t, y) -> (x0, eps), in each runtime, side by side.

The graph is export.DenoiserGraph, the network with the objective's conversion, as `sample` calls it. Runtimes:
PyTorch eager, torch.compile (inductor), onnxruntime on the ONNX file `tinydiffusion export` writes, and OpenVINO
on the same file where it is installed. All in one process on the CPU in fp32 with the same threads; each round
times every runtime in turn at every batch (so load from elsewhere falls on all alike), each figure the mean of
--calls calls after one warm-up call; the table shows the median over rounds. Every runtime's output is checked
against eager's first.

    python benchmarks/export_speed.py [--checkpoint C] [--rounds 7] [--calls 5] [--batches 1,64] [--threads 0]
                                      [--runtimes eager,compile,onnxruntime,openvino] [--json F] [--markdown F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from common import machine_description, report

from tinydiffusion.export import DenoiserGraph, onnx_graph
from tinydiffusion.export.onnx_file import decoder_file, onnx_bytes
from tinydiffusion.pipeline import load_model

RUNTIMES = ("eager", "compile", "onnxruntime", "openvino")


def inputs(model, batch: int) -> dict[str, np.ndarray]:
    net = model.config.net
    generator = np.random.default_rng(batch)
    feeds = {"x": generator.standard_normal((batch, net.in_channels, net.image_size, net.image_size), np.float32),
             "t": generator.uniform(0.05, 1.0, batch).astype(np.float32),
             "y": generator.integers(0, net.num_classes + 1, batch)}
    if net.guidance_input:
        feeds["guidance"] = np.full(batch, 1.5, np.float32)
    return feeds


def torch_runtime(graph: torch.nn.Module):
    def call(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return graph(*(torch.from_numpy(value) for value in feeds.values()))[0].numpy()
    return call


def openvino_runtime(onnx_file: Path, threads: int):
    """OpenVINO's CPU plugin on the ONNX file, or None where openvino is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    core = openvino.Core()
    # fp32 as the others: on a CPU with bf16 instructions OpenVINO's default is bf16, which differs by about 1e-2
    settings = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(core.read_model(str(onnx_file)), "CPU", settings)
    return lambda feeds: compiled(feeds)[compiled.output("x0")]


def build_runtimes(model, names: list[str], threads: int, workdir: Path) -> dict:
    """name -> call(feeds) -> x0, for each runtime asked for; None for one that is not installed."""
    graph = DenoiserGraph(model.net, model.diffusion, model.config.net.guidance_input).eval()
    onnx_file = workdir / "model.onnx"  # the denoiser alone: a latent model's decoder runs once, not timed here
    if "openvino" in names:
        onnx_file.write_bytes(onnx_bytes(model, decoder_file(model, onnx_file.name)))
    makers = {"eager": lambda: torch_runtime(graph), "compile": lambda: torch_runtime(torch.compile(graph)),
              "onnxruntime": lambda: (lambda feeds, session=onnx_graph(model, threads): session.run(**feeds)[0]),
              "openvino": lambda: openvino_runtime(onnx_file, threads)}
    return {name: makers[name]() for name in names}


def measure(model, names: list[str], batches: list[int], rounds: int, calls: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        runtimes = build_runtimes(model, names, threads, Path(workdir))
        feeds = {batch: inputs(model, batch) for batch in batches}
        reference = {batch: runtimes["eager"](feeds[batch]) for batch in batches} if "eager" in runtimes else {}
        times = {name: {batch: [] for batch in batches} for name, call in runtimes.items() if call is not None}
        differences = {name: 0.0 for name in times}
        for name in times:  # warm-up (torch.compile compiles here), and the check against eager
            for batch in batches:
                x0 = runtimes[name](feeds[batch])
                if batch in reference:
                    differences[name] = max(differences[name], float(np.abs(x0 - reference[batch]).max()))
        for _ in range(rounds):
            for name in times:
                for batch in batches:
                    start = time.perf_counter()
                    for _ in range(calls):
                        runtimes[name](feeds[batch])
                    times[name][batch].append((time.perf_counter() - start) / calls)
    return {"machine": machine_description(), "torch": torch.__version__, "threads": threads, "rounds": rounds,
            "calls": calls, "batches": batches, "model": str(model.source),
            "date": datetime.now().isoformat(timespec="minutes"),
            "missing": [name for name, call in runtimes.items() if call is None],
            "runtimes": {name: {"seconds": {str(b): statistics.median(s) for b, s in by_batch.items()},
                                "max_difference": differences[name]} for name, by_batch in times.items()}}


def summarize(results: dict) -> dict:
    """Per runtime and batch: images/s and speed against eager (where eager was measured)."""
    eager = results["runtimes"].get("eager")
    summary = {}
    for name, r in results["runtimes"].items():
        summary[name] = {batch: {"images_per_second": int(batch) / seconds,
                                 "vs_eager": eager["seconds"][batch] / seconds if eager else None}
                         for batch, seconds in r["seconds"].items()}
    return summary


def format_markdown(results: dict, summary: dict) -> str:
    batches = [str(b) for b in results["batches"]]
    lines = ["# Export speed", "", "Measured by `benchmarks/export_speed.py` (its docstring says how).", "",
             f"- machine: {results['machine']}; torch {results['torch']}, {results['threads']} threads, fp32",
             f"- model: {Path(results['model']).name}; medians of {results['rounds']} rounds of {results['calls']} "
             f"calls; {results['date']}", "",
             "| runtime | " + " | ".join(f"batch {b}: ms / call | images/s | vs eager" for b in batches)
             + " | max difference from eager |",
             "| --- | " + " | ".join("---: | ---: | ---:" for _ in batches) + " | ---: |"]
    for name, r in results["runtimes"].items():
        cells = []
        for b in batches:
            ratio = summary[name][b]["vs_eager"]
            cells.append(f"{1000 * r['seconds'][b]:.2f} | {summary[name][b]['images_per_second']:.0f} | "
                         + (f"{ratio:.2f}x" if ratio else "-"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['max_difference']:.1e} |")
    for name in results["missing"]:
        lines.append(f"| {name} | " + " | ".join("not installed | | " for _ in batches) + " | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="the model (default: the bundled one)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds; every figure is the median")
    parser.add_argument("--calls", type=int, default=5, help="calls timed together in one figure")
    parser.add_argument("--batches", default="1,64", help="batch sizes, comma-separated")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="which runtimes, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every runtime (0: torch's default)")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--markdown", help="write the table here (e.g. docs/reports/export-speed.md)")
    args = parser.parse_args()
    names = args.runtimes.split(",")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches takes whole numbers separated by commas, not {args.batches!r}")
    if args.rounds < 1 or args.calls < 1 or args.threads < 0 or min(batches) < 1:
        parser.error("--rounds, --calls and every batch must be at least 1, and --threads at least 0")
    if unknown := set(names) - set(RUNTIMES):
        parser.error(f"unknown runtime {sorted(unknown)[0]!r}; choose from {', '.join(RUNTIMES)}")
    for path in (args.json, args.markdown):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"{os.path.dirname(path)} is not a folder, so {path} cannot be written")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, "cpu")
    results = measure(model, names, batches, args.rounds, args.calls, torch.get_num_threads())
    report(results, summarize, format_markdown, args.json, args.markdown)


if __name__ == "__main__":
    main()
