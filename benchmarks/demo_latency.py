"""The demo page's response time: a 16-image grid at the default settings (every class in turn, DPM-Solver++(2M),
20 steps, guidance 1.5), on the bundled model.

Measured twice, each the median of --runs after one warm-up:
  handler: demo.handlers.generate_grid in this process (the sampling, the grid, nothing else);
  server:  `tinydiffusion demo` in a subprocess, asked through its HTTP API by gradio_client, from the request
           to the PNG on this side (queue, sampling, PNG encoding, the download), as the page's Generate button.
The server's start-up (process start to the root URL answering) is reported too. Torch uses its default
threads (all cores), as `tinydiffusion demo` does. Whether the machine was quiet: the CPU time other processes
used meanwhile (all busy CPU time in /proc/stat less this process's and its children's).

    python benchmarks/demo_latency.py [--runs 7] [--json docs/reports/runs/demo_latency.json] \
        [--markdown docs/reports/demo-latency.md]

--markdown replaces the block between the `<!-- demo-latency -->` markers in that file (the file must have them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
from common import cpu_description, markdown_table, seconds_per_call, write_json

from tinydiffusion.demo import handlers
from tinydiffusion.files import atomic_write_bytes
from tinydiffusion.pipeline import load_model, sampling_settings

START, END = "<!-- demo-latency:start -->", "<!-- demo-latency:end -->"
NUM = 16


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds every process on the machine has used, those this process and its waited-for children have)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def timed(fn, runs: int) -> list[float]:
    """Seconds of the first call (the warm-up: oneDNN primitives, the first allocations), then of `runs` more."""
    return seconds_per_call(fn, runs + 1)


def handler_times(model, runs: int, settings: tuple) -> list[float]:
    return timed(lambda: handlers.generate_grid(model, NUM, handlers.EVERY_CLASS, *settings, 0), runs)


def server_times(runs: int, settings: tuple) -> tuple[float, list[float], list[float]]:
    """(start-up seconds, seconds per request, seconds of sampling per request as the page's status line says)."""
    import httpx
    from gradio_client import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tinydiffusion", "demo", "--port", str(port), "--device", "cpu"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, downloads = f"http://127.0.0.1:{port}/", None
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the demo did not start:\n{process.stdout.read()[-2000:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        startup = time.perf_counter() - started
        downloads = tempfile.mkdtemp(prefix="demo-latency-")  # the grids the client fetches; removed below
        client = Client(url, verbose=False, download_files=downloads)
        statuses = []

        def request():
            _, status = client.predict(NUM, handlers.EVERY_CLASS, *settings, 0, api_name="/generate")
            statuses.append(float(status.rsplit(": ", 1)[1].removesuffix(" s.")))

        return startup, timed(request, runs), statuses
    finally:
        process.terminate()
        process.communicate(timeout=60)
        if downloads:
            shutil.rmtree(downloads, ignore_errors=True)


def summary(seconds: list[float]) -> dict:
    """The first (warm-up) call apart; median, fastest and slowest of the others."""
    first, rest = seconds[0], seconds[1:]
    return {"first_s": first, "median_s": statistics.median(rest), "min_s": min(rest), "max_s": max(rest), "runs": rest}


def markdown(result: dict) -> str:
    h, s, inside = result["handler"], result["server"], result["server_sampling"]
    others, wall = result["others_cpu_s"], result["wall_s"]
    quiet = others < 0.05 * wall * result["cpus"]
    lines = [
        f"`python benchmarks/demo_latency.py --runs {result['runs']}` on {result['cpu']}, torch {result['torch']} "
        f"({result['threads']} threads), {result['date']}: a grid of {NUM} images at the defaults "
        f"({result['sampler']}, {result['steps']} steps, guidance {result['guidance']:g}, every class in turn); "
        f"median of {result['runs']} runs after the first (which warms up), and the first apart.",
        "",
        *markdown_table(["measured", "median", "fastest", "slowest", "first call (warm-up)"],
                        [(what, *(f"{m[key]:.2f} s" for key in ("median_s", "min_s", "max_s", "first_s")))
                         for what, m in (("the handler (sampling and the grid)", h),
                                         ("**through the server's HTTP API (request to PNG)**", s),
                                         ("of which sampling in the server (its status line)", inside))], "lrrrr"),
        "",
        f"The server took {result['server_startup_s']:.1f} s from the process's start to answering its root URL "
        "(importing Gradio and torch, loading the model, drawing the forward tab's test images when the data is "
        "not on the machine).",
        "",
        f"Other processes used {others:.0f} CPU-seconds of the {wall * result['cpus']:.0f} the machine had during "
        f"the {wall:.0f} s of measurement (load average before: {result['load_before'][0]:.2f}). "
        + ("The machine was otherwise quiet." if quiet else "**The machine was not quiet:** other processes shared "
           "its cores, so these times are longer than on an idle machine."),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--markdown", help="replace the block between the demo-latency markers in this file")
    args = parser.parse_args()
    model = load_model(None, "cpu")
    sampler, steps, guidance = sampling_settings(model)
    settings = (sampler, steps, guidance)
    load_before = list(os.getloadavg())
    started, (busy, own) = time.perf_counter(), cpu_seconds()
    handler = handler_times(model, args.runs, settings)
    startup, server, inside = server_times(args.runs, settings)
    wall, (busy_after, own_after) = time.perf_counter() - started, cpu_seconds()
    result = {"cpu": cpu_description(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "runs": args.runs,
              "date": datetime.now().isoformat(timespec="seconds"), "sampler": sampler, "steps": steps,
              "guidance": guidance, "handler": summary(handler), "server": summary(server),
              "server_sampling": summary(inside),
              "server_startup_s": startup, "wall_s": wall, "others_cpu_s": (busy_after - busy) - (own_after - own),
              "load_before": load_before, "load_after": list(os.getloadavg())}
    text = markdown(result)
    print(text)
    if args.json:
        write_json(args.json, result)
    if args.markdown:
        path = Path(args.markdown)
        page = path.read_text()
        if START not in page or END not in page:
            raise SystemExit(f"{path} has no {START} ... {END} block to replace.")
        before, rest = page.split(START, 1)
        after = rest.split(END, 1)[1]
        atomic_write_bytes(path, f"{before}{START}\n{text}{END}{after}".encode())


if __name__ == "__main__":
    main()
