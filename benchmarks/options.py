"""Each speed option of the training loop, measured on this machine: which ones should "auto" turn on?

The options are bf16 autocast, channels-last, fused AdamW and torch.compile (`--train.precision`,
`--train.channels_last`, `--train.fused_adamw`, `--train.compile`). For each option set a fresh
subprocess runs the project's whole Trainer loop on the `fashion-mnist` preset (real data, sample
grids off) for `--steps` steps and logs a metrics.jsonl window every `--log-every` steps. From it:

  steady images/s: the median window after the first (the first holds warm-up: allocation,
      oneDNN primitive creation, torch.compile's compilation);
  warm-up seconds: the first window's time minus what it would take at the steady rate;
  5-epoch estimate: warm-up + the preset's 5 epochs (2,340 steps of 128) at the steady rate,
      which is what decides an option whose warm-up is long (torch.compile).

Rounds run every option set in turn, so load from other processes falls on all of them alike; each
figure is the median over rounds. Compiled sets run `--compile-rounds` times with their own
TORCHINDUCTOR_CACHE_DIR, empty at first: the first run's warm-up is a first compilation ("cold"),
later runs find their kernels cached ("warm"), as a user's second run does. Every set is compared
with fp32 (no option on) from the same rounds.

    python benchmarks/options.py --data-dir /path/to/fashion-mnist [--rounds 3] [--steps 30]
        [--threads N] [--device cpu|cuda] [--sets fp32,bf16,...] [--json F] [--markdown docs/reports/options.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import machine_record, markdown_table, report

from tinydiffusion.config import apply_overrides
from tinydiffusion.presets import get_preset
from tinydiffusion.training import Trainer

LOG_EVERY = 5
PRESET_STEPS = 5 * (60_000 // 128)  # the fashion-mnist preset's 5 epochs
BATCH = 128
OFF = {"train.precision": "fp32", "train.channels_last": "off", "train.fused_adamw": "off", "train.compile": "off"}
OPTION_SETS = {
    "fp32": {},
    "bf16": {"train.precision": "bf16"},
    "channels_last": {"train.channels_last": "on"},
    "bf16+channels_last": {"train.precision": "bf16", "train.channels_last": "on"},
    "fused_adamw": {"train.fused_adamw": "on"},
    "bf16+fused_adamw": {"train.precision": "bf16", "train.fused_adamw": "on"},
    "compile": {"train.compile": "on"},
    "bf16+compile": {"train.precision": "bf16", "train.compile": "on"},
    # GPU only: the network's steps as CUDA graphs, by torch.compile's cudagraph trees
    "compile_reduce_overhead": {"train.compile": "on", "train.compile_mode": "reduce-overhead",
                                "train.fused_adamw": "on"},
}
DEFAULT_SETS = {
    "cpu": ["fp32", "bf16", "channels_last", "bf16+channels_last", "fused_adamw", "bf16+fused_adamw", "compile",
            "bf16+compile"],
    "cuda": ["fp32", "fused_adamw", "bf16+channels_last", "compile", "compile_reduce_overhead"],
}


def worker(label: str, steps: int, threads: int, device: str, data_dir: str, preset: str = "fashion-mnist",
           log_every: int = LOG_EVERY) -> dict:
    """The whole loop for one option set; returns its metrics.jsonl windows."""
    overrides = {**OFF, **OPTION_SETS[label], "data.data_dir": data_dir, "data.download": False,
                 "train.max_steps": steps, "train.log_every": log_every, "train.sample_every_epoch": False,
                 "train.threads": threads, "train.device": device}
    config = apply_overrides(get_preset(preset), overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        result = Trainer(config, Path(run_dir), progress=False).run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {"windows": records, "final_loss": result.final_loss, "threads": torch.get_num_threads()}


def run_worker(label: str, args, cache_root: Path) -> dict:
    command = [sys.executable, __file__, "--worker", label, "--steps", str(args.steps), "--threads",
               str(args.threads), "--device", args.device, "--data-dir", args.data_dir, "--log-every",
               str(args.log_every)]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_root / label)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the {label} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rates(run: dict) -> tuple[float, float]:
    """(steady images/s, warm-up seconds) of one worker run."""
    windows = run["windows"]
    steady = statistics.median(w["images_per_second"] for w in windows[1:])
    first = windows[0]
    warmup = first["elapsed_s"] - first["step"] * BATCH / steady
    return steady, max(0.0, warmup)


def measure(args) -> dict:
    sets = args.sets.split(",")
    # the CPU's description says whether it has bf16 instructions, which decide what the bf16 option sets measure
    results = {"machine": machine_record(torch=torch.__version__, device=args.device),
               "settings": {"steps": args.steps, "log_every": args.log_every, "rounds": args.rounds,
                            "compile_rounds": args.compile_rounds, "threads": args.threads},
               "sets": {label: [] for label in sets}}
    with tempfile.TemporaryDirectory() as cache_root:
        for round_index in range(args.rounds):
            for label in sets:
                if "compile" in label and round_index >= args.compile_rounds:
                    continue
                run = run_worker(label, args, Path(cache_root))
                run["cold_cache"] = not results["sets"][label]
                results["sets"][label].append(run)
                steady, warmup = rates(run)
                print(f"round {round_index + 1}/{args.rounds} {label}: {steady:.1f} img/s, warm-up {warmup:.1f} s",
                      file=sys.stderr, flush=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return results


def summarize(results: dict) -> dict:
    summary = {}
    baseline = None
    for label, runs in results["sets"].items():
        measured = [rates(run) for run in runs]
        steady = statistics.median(m[0] for m in measured)
        cold = measured[0][1]  # the first run: empty caches
        warm = statistics.median(m[1] for m in measured[1:]) if len(measured) > 1 else cold
        summary[label] = {"steady_images_per_second": steady, "min": min(m[0] for m in measured),
                          "max": max(m[0] for m in measured), "warmup_seconds_cold": cold,
                          "warmup_seconds_warm": warm, "runs": len(runs),
                          "five_epoch_seconds": cold + PRESET_STEPS * BATCH / steady,
                          "five_epoch_seconds_warm": warm + PRESET_STEPS * BATCH / steady,
                          "loss_at_end": statistics.median(run["final_loss"] for run in runs)}
        if label == "fp32":
            baseline = summary[label]
    if baseline:
        for row in summary.values():
            row["speed_vs_fp32"] = row["steady_images_per_second"] / baseline["steady_images_per_second"]
            row["five_epochs_vs_fp32"] = baseline["five_epoch_seconds"] / row["five_epoch_seconds"]
    return summary


def format_markdown(results: dict, summary: dict) -> str:
    m, s = results["machine"], results["settings"]
    lines = ["# Training options on this machine", "",
             "Measured by `benchmarks/options.py`; its docstring says how each figure is taken.", "",
             f"- {m['cpu']}, {m['logical_cpus']} logical CPUs, device {m['device']}, torch {m['torch']}, "
             f"torch threads {s['threads'] or 'default'}, {m['date']}",
             f"- load average (1 min): {m['load_average_at_start']:.2f} at the start, "
             f"{m['load_average_at_end']:.2f} at the end",
             f"- the fashion-mnist preset's whole Trainer loop, batch {BATCH}; {s['steps']} steps per run, windows of "
             f"{s['log_every']}, the first left out; median of {s['rounds']} rounds "
             f"({s['compile_rounds']} for compiled sets)", ""]
    lines += markdown_table(
        ["option set", "runs", "steady img/s", "range", "vs fp32", "warm-up s, cold / warm cache",
         "5 epochs s, cold / warm (est.)", "5 epochs vs fp32, cold"],
        [(label, row["runs"], f"{row['steady_images_per_second']:.0f}", f"{row['min']:.0f}-{row['max']:.0f}",
          f"{row.get('speed_vs_fp32', float('nan')):.2f}",
          f"{row['warmup_seconds_cold']:.1f} / {row['warmup_seconds_warm']:.1f}",
          f"{row['five_epoch_seconds']:.0f} / {row['five_epoch_seconds_warm']:.0f}",
          f"{row.get('five_epochs_vs_fp32', float('nan')):.2f}") for label, row in summary.items()], "lrrrrrrr")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/fashion-mnist", help="Fashion-MNIST IDX files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile-rounds", type=int, default=2,
                        help="rounds that include compiled sets (the first compiles from scratch)")
    parser.add_argument("--steps", type=int, default=30, help="steps per run (at least 3 windows)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log-every", type=int, default=LOG_EVERY, help="steps per timed window")
    parser.add_argument("--sets", help=f"comma-separated option sets, fp32 first (of {', '.join(OPTION_SETS)}); "
                        "default: those that apply to the device")
    parser.add_argument("--json", help="write every measurement to this JSON file")
    parser.add_argument("--markdown", help="write the table to this Markdown file")
    parser.add_argument("--worker", choices=list(OPTION_SETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sets = args.sets or ",".join(DEFAULT_SETS["cuda" if args.device.startswith("cuda") else "cpu"])
    unknown = [s for s in args.sets.split(",") if s not in OPTION_SETS]
    if args.log_every < 1 or args.steps < 3 * args.log_every or args.rounds < 1 or unknown:
        parser.error(f"--steps must be at least 3 windows (--log-every), --rounds at least 1; unknown sets: {unknown}")
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.threads, args.device, args.data_dir,
                                log_every=args.log_every)))
        return
    report(measure(args), summarize, format_markdown, args.json, args.markdown)


if __name__ == "__main__":
    main()
