"""Training and sampling speed of the `fashion-mnist` preset's UNet next to diffusers' UNet2DModel.

Both networks are measured in one run on the same machine, on the CPU in fp32 (batch 128, 28x28x1):

  parameters, and forward FLOPs per image (torch.utils.flop_counter: convolutions, matrix
  products and attention only; a multiply-add counts as 2);
  whole loop: images/s of the project's Trainer on the real data for `--steps` steps, sample
  grids off, from metrics.jsonl with the first window (warm-up) left out; it runs in a fresh
  subprocess, whose peak RSS (torch, the dataset and training together) is reported too;
  bare step: images/s of forward + MSE loss + backward + AdamW step on one fixed random batch,
  in the same subprocess right after the loop, so that the loop / bare-step ratio compares like
  with like; that ratio is given in wall time and in CPU time (the steadier of the two on a
  machine that other processes share);
  sampling: images/s of one network evaluation (eval mode, no_grad, batch 256); a sampler
  with N steps and classifier-free guidance costs 2N evaluations per image;
  the machine's fp32 matrix-product rate (torch.mm of 2048x2048), measured in the subprocess
  just before the bare step, and the achieved training rate, 3 x forward FLOPs x bare-step
  images/s (backward taken as twice the forward), as a fraction of it.

Every figure is the median of `--repeats` rounds; each round measures every network in turn, so
load from other processes falls on both alike. Defaults take about five minutes on two idle cores.

    python benchmarks/throughput.py --data-dir /path/to/fashion-mnist [--repeats 3] [--steps 20]
        [--threads N] [--json out.json] [--markdown docs/reports/throughput.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import diffusers
import torch
from baselines import NETWORKS, build
from common import machine_description, markdown_table, text_table, write_json
from torch.utils.flop_counter import FlopCounterMode

from tinydiffusion.config import apply_overrides
from tinydiffusion.files import atomic_write_bytes
from tinydiffusion.nets import count_parameters
from tinydiffusion.presets import get_preset
from tinydiffusion.training import Trainer

BATCH = 128  # the preset's training batch
SAMPLE_BATCH = 256
LOG_EVERY = 5  # whole-loop steps per metrics.jsonl window; the first window is warm-up and left out
BARE_WARMUP, BARE_STEPS = 2, 3  # untimed, then timed bare steps per round (the first steps run ~10% slow)
SAMPLE_BATCHES = 2  # timed sampling batches per round, after one untimed
MM_SIZE, MM_REPS = 2048, 5
LOOP_TARGET = 0.90  # the whole loop should run at >= 90% of the bare step's speed


def fixed_batch(batch: int, seed: int = 0):
    """x_t, t, y and a target: random, but the same for every network and every round."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator).float()
    y = torch.randint(0, 11, (batch,), generator=generator)  # 10 = "no class"
    return x, t, y, torch.randn(batch, 1, 28, 28, generator=generator)


# --- measurements in this process --------------------------------------------------------------

def matmul_gflops(size: int = MM_SIZE, reps: int = MM_REPS) -> float:
    """fp32 matrix-product rate: the practical peak that convolutions are measured against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def forward_flops_per_image(net: torch.nn.Module) -> float:
    x, t, y, _ = fixed_batch(BATCH)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, t, y)
    return counter.get_total_flops() / BATCH


@torch.no_grad()
def sampling_images_per_second(net: torch.nn.Module, batches: int = SAMPLE_BATCHES) -> float:
    """Images/s of single network evaluations, as a sampler makes them."""
    x, t, y, _ = fixed_batch(SAMPLE_BATCH, seed=1)
    net.eval()
    net(x, t, y)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        net(x, t, y)
    return batches * SAMPLE_BATCH / (time.perf_counter() - start)


# --- the whole loop and the bare step, in a fresh subprocess --------------------------------------

class BareStep:
    """One network, an AdamW with the Trainer's settings and a fixed batch: the step with nothing around it."""

    def __init__(self, net: torch.nn.Module):
        self.net = net.train()
        self.optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, betas=(0.9, 0.999), weight_decay=0.0)
        self.x, self.t, self.y, self.target = fixed_batch(BATCH)
        for _ in range(BARE_WARMUP):  # the allocator and kernels settle
            self.step()

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(self.net(self.x, self.t, self.y), self.target).backward()
        self.optimizer.step()

    def rates(self, steps: int = BARE_STEPS) -> tuple[float, float]:
        """Images per second of wall time and per second of this process's CPU time."""
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        return steps * BATCH / (time.perf_counter() - wall), steps * BATCH / (time.process_time() - cpu)


def loop_worker(name: str, steps: int, threads: int, data_dir: str) -> dict:
    """The whole loop for `steps` steps, then the bare step; steady-state rates and this process's peak RSS."""
    config = apply_overrides(get_preset("fashion-mnist"), {
        "data.data_dir": data_dir, "data.download": False, "train.max_steps": steps, "train.log_every": LOG_EVERY,
        "train.sample_every_epoch": False, "train.threads": threads, "train.device": "cpu", "train.precision": "fp32",
        "train.channels_last": "off",  # the bare step below is plain NCHW: like with like
    })
    with tempfile.TemporaryDirectory() as run_dir:
        records = []  # each metrics.jsonl record, with this process's CPU time when it was logged
        trainer = Trainer(config, Path(run_dir), progress=False, net=build(name),
                          on_log=lambda record: records.append({**record, "cpu_s": time.process_time()}))
        rss_before = peak_rss_bytes()
        trainer.run()
    rss_peak = peak_rss_bytes()
    del trainer
    first, last = records[0], records[-1]  # the first window (steps 1..LOG_EVERY) holds the warm-up
    images = (last["step"] - first["step"]) * BATCH
    stepper = BareStep(build(name))
    peak = matmul_gflops()
    bare_wall, bare_cpu = stepper.rates()
    return {"loop_images_per_second": images / (last["elapsed_s"] - first["elapsed_s"]),
            "loop_images_per_cpu_second": images / (last["cpu_s"] - first["cpu_s"]),
            "bare_images_per_second": bare_wall, "bare_images_per_cpu_second": bare_cpu, "matmul_gflops": peak,
            "peak_rss_bytes": rss_peak, "rss_before_training_bytes": rss_before, "threads": torch.get_num_threads()}


def peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux from VmHWM: ru_maxrss would carry the parent's peak
    over through fork and exec."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def run_worker(name: str, args) -> dict:
    command = [sys.executable, __file__, "--loop-worker", name, "--steps", str(args.steps),
               "--threads", str(args.threads), "--data-dir", str(args.data_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the whole-loop measurement of {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the run ---------------------------------------------------------------------------------------

def machine_info() -> dict:
    return {"machine": machine_description(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "threads": torch.get_num_threads(), "date": datetime.now().astimezone().isoformat(timespec="minutes"),
            "load_average_at_start": os.getloadavg()[0]}


def measure(args) -> dict:
    """Interleaved rounds: each network's sampling rate, then its subprocess (loop, mm peak, bare step)."""
    nets = {name: build(name) for name in NETWORKS}
    results = {"machine": machine_info(), "settings": {"batch": BATCH, "sample_batch": SAMPLE_BATCH,
               "repeats": args.repeats, "loop_steps": args.steps, "loop_window": LOG_EVERY, "precision": "fp32"},
               "networks": {}}
    for name, net in nets.items():
        results["networks"][name] = {"label": NETWORKS[name][0], "parameters": count_parameters(net),
                                     "forward_flops_per_image": forward_flops_per_image(net),
                                     "sampling_images_per_second": [], "rounds": []}
    for round_index in range(args.repeats):
        for name, net in nets.items():
            record = results["networks"][name]
            record["sampling_images_per_second"].append(sampling_images_per_second(net))
            record["rounds"].append(run_worker(name, args))
            done = record["rounds"][-1]
            print(f"round {round_index + 1}/{args.repeats} {name}: loop {done['loop_images_per_second']:.1f}, "
                  f"bare {done['bare_images_per_second']:.1f}, "
                  f"sampling {record['sampling_images_per_second'][-1]:.1f} img/s", file=sys.stderr, flush=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return results


def summarize(results: dict) -> dict:
    """Medians, and the derived figures: achieved GFLOP/s, fraction of the mm peak, loop / bare step."""
    rounds = [r for record in results["networks"].values() for r in record["rounds"]]
    summary = {"matmul_gflops": statistics.median(r["matmul_gflops"] for r in rounds)}
    for name, record in results["networks"].items():
        def median(key, rounds=record["rounds"]):
            return statistics.median(r[key] for r in rounds)
        bare, loop = median("bare_images_per_second"), median("loop_images_per_second")
        achieved = 3 * record["forward_flops_per_image"] * bare / 1e9
        fraction = statistics.median(3 * record["forward_flops_per_image"] * r["bare_images_per_second"] / 1e9
                                     / r["matmul_gflops"] for r in record["rounds"])  # each round: adjacent timings
        summary[name] = {
            "parameters": record["parameters"], "forward_mflop_per_image": record["forward_flops_per_image"] / 1e6,
            "bare_step_images_per_second": bare, "whole_loop_images_per_second": loop,
            "loop_over_bare": loop / bare,
            "loop_over_bare_cpu_time": median("loop_images_per_cpu_second") / median("bare_images_per_cpu_second"),
            "training_gflops": achieved, "fraction_of_mm_peak": fraction,
            "sampling_images_per_second": statistics.median(record["sampling_images_per_second"]),
            "peak_rss_mib": max(r["peak_rss_bytes"] for r in record["rounds"]) / 2**20,
            "rss_before_training_mib": max(r["rss_before_training_bytes"] for r in record["rounds"]) / 2**20,
            "loop_threads": record["rounds"][0]["threads"],
        }
    return summary


ROWS = [  # (key, label, format); the ratio column is left empty for ratios
    ("parameters", "parameters", "{:,.0f}"),
    ("forward_mflop_per_image", "forward MFLOP / image", "{:.1f}"),
    ("bare_step_images_per_second", "train img/s, bare step", "{:.1f}"),
    ("whole_loop_images_per_second", "train img/s, whole Trainer loop", "{:.1f}"),
    ("loop_over_bare", f"whole loop / bare step, wall time (target >= {LOOP_TARGET:.2f})", "{:.3f}"),
    ("loop_over_bare_cpu_time", "whole loop / bare step, CPU time", "{:.3f}"),
    ("training_gflops", "train GFLOP/s achieved (3 x fwd x bare img/s)", "{:.1f}"),
    ("fraction_of_mm_peak", "  fraction of the fp32 mm peak", "{:.3f}"),
    ("sampling_images_per_second", f"sampling img/s per network evaluation (batch {SAMPLE_BATCH})", "{:.1f}"),
    ("peak_rss_mib", "peak RSS of the whole-loop process, MiB", "{:.0f}"),
    ("rss_before_training_mib", "  of which before the first step, MiB", "{:.0f}"),
]


def header_lines(results: dict, summary: dict) -> list[str]:
    m, s = results["machine"], results["settings"]
    return [
        f"machine: {m['machine']}",
        f"torch {m['torch']}, diffusers {m['diffusers']}, torch threads: {m['threads']} "
        f"({summary['ours']['loop_threads']} in the whole-loop subprocess), {m['date']}",
        f"load average (1 min): {m['load_average_at_start']:.2f} at the start, "
        f"{m['load_average_at_end']:.2f} at the end",
        f"CPU, {s['precision']}, batch {s['batch']}, 28x28x1; median of {s['repeats']} rounds; whole loop: "
        f"{s['loop_steps']} steps, the first {s['loop_window']} left out",
        f"fp32 matrix product ({MM_SIZE}x{MM_SIZE} torch.mm): {summary['matmul_gflops']:.1f} GFLOP/s",
    ]


def table_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for key, label, fmt in ROWS:
        ours, theirs = summary["ours"][key], summary["diffusers"][key]
        ratio = "" if key.startswith("loop_over_bare") else f"{ours / theirs:.2f}"
        rows.append((label, fmt.format(ours), fmt.format(theirs), ratio))
    return rows


def format_text(results: dict, summary: dict) -> str:
    table = text_table([("", "ours", "diffusers", "ours/diffusers"), *table_rows(summary)])
    return "\n".join([*header_lines(results, summary), "", *table])


def format_markdown(results: dict, summary: dict) -> str:
    names = results["networks"]
    lines = ["# Training and sampling speed", "",
             "Measured by `benchmarks/throughput.py`; its docstring says how each figure is taken.", ""]
    lines += [f"- {line}" for line in header_lines(results, summary)]
    lines += ["", *markdown_table(["", f"ours: {names['ours']['label']}", names["diffusers"]["label"],
                                   "ours / diffusers"], [(row[0].strip(), *row[1:]) for row in table_rows(summary)],
                                  "lrrr")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/fashion-mnist", help="Fashion-MNIST IDX files (for the whole loop)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; every figure is the median")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--steps", type=int, default=20, help=f"whole-loop steps per round (at least {2 * LOG_EVERY})")
    parser.add_argument("--json", help="write every measurement to this JSON file")
    parser.add_argument("--markdown", help="write the table to this Markdown file (e.g. docs/reports/throughput.md)")
    parser.add_argument("--loop-worker", choices=list(NETWORKS), help=argparse.SUPPRESS)  # the subprocess's role
    args = parser.parse_args()
    if args.steps < 2 * LOG_EVERY or args.repeats < 1 or args.threads < 0:
        parser.error(f"--steps must be at least {2 * LOG_EVERY}, --repeats at least 1, --threads not negative")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loop_worker:
        print(json.dumps(loop_worker(args.loop_worker, args.steps, args.threads, args.data_dir)))
        return

    results = measure(args)
    summary = summarize(results)
    print(format_text(results, summary))
    if args.json:
        write_json(args.json, {**results, "summary": summary})
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), format_markdown(results, summary).encode())


if __name__ == "__main__":
    main()
