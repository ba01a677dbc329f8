"""What data sources cost on this machine: preparing them, opening them again, and training from them.

  preparing: the train split of a folder of PNGs (mnist-10k/train, one sub-folder per class), the same
      folder as a .zip (mnist-10k/train.zip), and the Fashion-MNIST IDX files, each by `load_data` in a
      fresh subprocess with its own empty cache (TINYDIFFUSION_CACHE). "First use" runs from the call to
      the returned dataset: read, decode, shape, write and hash the prepared array, then read it back in.
      "Cache hit" is `load_data` again in the same process: fingerprint the source, find the prepared
      array, read it in (median of 3). Rounds take the sources in turn; figures are medians over rounds.
  training speed: the `fashion-mnist` preset's UNet, fitted to each source by `run_configs.new_run`
      (both are 28x28x1 with 10 classes, so it is the same network), fp32, batch 128, the project's whole
      Trainer loop with sample grids off, on the prepared mnist-10k folder and on the Fashion-MNIST IDX
      data. Each run is a fresh subprocess; steady images/s is the median metrics.jsonl window after the
      first (warm-up), as `options.py` reads it. Rounds alternate which source goes first; the ratio
      folder / IDX is taken per round, and its median reported.
  cifar10 cost: the `cifar10` preset (its defaults: fp32, channels-last on a CPU, random flips) on a
      generated .npz of random 32x32x3 images with 10 classes, batch 128, one metrics window per step;
      seconds per step = 128 / the window's images/s, median of the windows after the first; one epoch of
      CIFAR-10's 50,000 training images is 390 such steps.

    python benchmarks/datasets.py --data-root ../shared/data [--rounds 3] [--threads 1,2] [--steps 20]
        [--cifar-steps 4] [--json F] [--markdown docs/reports/datasets.md]
    python benchmarks/datasets.py --from-json F --markdown docs/reports/datasets.md   # the report of a saved run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import cpu_description, lscpu_fields, machine_record, markdown_table, report, seconds_per_call
from options import rates
from torch.utils.flop_counter import FlopCounterMode

from tinydiffusion.config import DataConfig
from tinydiffusion.data import load_data
from tinydiffusion.nets import build_network, count_parameters
from tinydiffusion.presets import PRESETS
from tinydiffusion.run_configs import new_run
from tinydiffusion.training import Trainer

REPO = Path(__file__).resolve().parents[1]
BATCH = 128
LOG_EVERY = 5  # training-speed steps per metrics window; the first window holds the warm-up
HIT_REPEATS = 3
CIFAR_EPOCH_IMAGES = 50_000
CIFAR_STEPS_PER_EPOCH = CIFAR_EPOCH_IMAGES // BATCH  # 390, as the Trainer counts them
GPU_RESULTS = REPO / "docs" / "gpu-h200" / "results.json"


def sources(data_root: Path) -> dict[str, dict]:
    """label -> what `load_data` is given (DataConfig fields)."""
    return {
        "mnist-10k train/, a folder of PNGs": {"source": str(data_root / "mnist-10k" / "train")},
        "mnist-10k train.zip": {"source": str(data_root / "mnist-10k" / "train.zip")},
        "Fashion-MNIST train, gzipped IDX files": {"source": "fashion-mnist",
                                                   "data_dir": str(data_root / "fashion-mnist")},
    }


def data_config(source: dict) -> DataConfig:
    return DataConfig(download=False, **source)


# --- workers: each runs in a fresh subprocess (the test calls them in-process at a tiny size) -----

def prepare_worker(source: dict, hit_repeats: int = HIT_REPEATS) -> dict:
    """First use of a source in the current cache (which should be empty), then cache hits."""
    config = data_config(source)
    start = time.perf_counter()
    dataset = load_data(config, "train", progress=False)
    first = time.perf_counter() - start
    count, shape, classes = len(dataset), list(dataset.images.shape[1:]), len(dataset.class_names)
    manifest = dataset.manifest
    del dataset
    hits = seconds_per_call(lambda: load_data(config, "train", progress=False), hit_repeats)
    return {"images": count, "image_shape": shape, "classes": classes, "first_use_s": first,
            "hit_s": statistics.median(hits) if hits else None, "hits_s": hits,
            "prepare_seconds_in_manifest": manifest["prepare_seconds"], "skipped": manifest["skipped_count"]}


def train_worker(source: dict, steps: int, threads: int, preset: str = "fashion-mnist", batch: int = BATCH,
                 log_every: int = LOG_EVERY, extra: dict | None = None) -> dict:
    """`tinydiffusion train --data SOURCE --preset PRESET` for `steps` steps, sample grids off, as the command
    line builds it (the preset fitted to the data); returns the metrics.jsonl windows."""
    overrides = {"data.source": source["source"], "data.data_dir": source.get("data_dir", ""),
                 "data.download": False, "train.max_steps": steps, "train.log_every": log_every,
                 "train.sample_every_epoch": False, "train.threads": threads, "train.device": "cpu",
                 "train.batch_size": batch, **(extra or {})}
    load_at_start = os.getloadavg()[0]  # other processes on the machine; two threads suffer most from them
    dataset = load_data(new_run(preset, None, overrides).data, "train", progress=False)
    classes = len(dataset.class_names) if dataset.labels is not None else 0
    config = new_run(preset, None, overrides, (tuple(dataset.images.shape[1:]), classes, len(dataset)))
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, Path(run_dir), dataset=dataset, progress=False)
        result = trainer.run()
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "images_per_second" in r]  # not the lines of evaluations
    return {"windows": windows, "final_loss": result.final_loss, "threads": torch.get_num_threads(),
            "images": len(dataset), "net": repr(config.net), "parameters": count_parameters(trainer.state.net),
            "options": trainer.state.options, "load_average": [load_at_start, os.getloadavg()[0]]}


def write_random_npz(path: Path, count: int, size: int = 32, channels: int = 3, classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8),
             labels=rng.integers(0, classes, count))
    return path


def cifar_worker(steps: int, threads: int, images: int, batch: int = BATCH) -> dict:
    """The cifar10 preset's loop on random 32x32x3 data, one window per step."""
    with tempfile.TemporaryDirectory() as folder:
        npz = write_random_npz(Path(folder) / "random-cifar.npz", images)
        return train_worker({"source": str(npz)}, steps, threads, preset="cifar10", batch=batch, log_every=1)


WORKERS = {"prepare": prepare_worker, "train": train_worker, "cifar": cifar_worker}


def run_worker(name: str, cache: Path, **kwargs) -> dict:
    """One worker in a fresh subprocess with TINYDIFFUSION_CACHE=cache; its result is its last line of stdout."""
    command = [sys.executable, __file__, "--worker", name, "--worker-args", json.dumps(kwargs)]
    env = {**os.environ, "TINYDIFFUSION_CACHE": str(cache)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the {name} worker failed ({kwargs}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the machine and the networks ----------------------------------------------------------------

def lscpu_name() -> str:
    """The CPU (common.cpu_description), then what lscpu adds that decides data loading: vendor, family and
    model, cores and threads per core, the L3 cache, and whether the machine is virtualised."""
    fields = lscpu_fields()
    if not fields:
        return cpu_description()
    parts = [f"{cpu_description()} ({fields.get('Vendor ID', '?')}, "
             f"family {fields.get('CPU family', '?')} model {fields.get('Model', '?')})",
             f"{fields.get('Core(s) per socket', '?')} cores per socket, "
             f"{fields.get('Thread(s) per core', '?')} thread(s) per core"]
    if fields.get("L3 cache"):
        parts.append(f"L3 {fields['L3 cache']}")
    if fields.get("Hypervisor vendor"):
        parts.append(f"virtualised ({fields['Hypervisor vendor']})")
    return "; ".join(parts)


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
        return f"commit {git('rev-parse', '--short', 'HEAD')}" + (" with uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def forward_gflops_per_image(preset: str) -> float:
    config = PRESETS[preset].net
    net = build_network(config)
    x = torch.zeros(2, config.in_channels, config.image_size, config.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, torch.ones(2), torch.zeros(2, dtype=torch.long))
    return counter.get_total_flops() / 2 / 1e9


# --- the run -------------------------------------------------------------------------------------

def steady(run: dict) -> float:
    return rates(run)[0]


def measure(args) -> dict:
    known = sources(Path(args.data_root))
    missing = [spec["data_dir"] if "data_dir" in spec else spec["source"] for spec in known.values()
               if not Path(spec.get("data_dir") or spec["source"]).exists()]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)}; point --data-root at the folder holding mnist-10k/ "
                         "and fashion-mnist/.")
    results = {"machine": {**machine_record(torch=torch.__version__, code=code_version()), "cpu": lscpu_name()},
               "settings": {"rounds": args.rounds, "threads": args.threads, "steps": args.steps,
                            "log_every": LOG_EVERY, "batch": BATCH, "cifar_steps": args.cifar_steps,
                            "cifar_threads": args.cifar_threads, "cifar_images": args.cifar_images,
                            "command": " ".join(["python", "benchmarks/datasets.py", *sys.argv[1:]])},
               "prepare": {label: [] for label in known}, "train": {}, "cifar": None}
    labels = list(known)
    if "prepare" in args.parts:
        for round_index in range(args.rounds):
            for label in labels[round_index % len(labels):] + labels[:round_index % len(labels)]:
                with tempfile.TemporaryDirectory() as cache:
                    run = run_worker("prepare", Path(cache), source=known[label])
                results["prepare"][label].append(run)
                log(f"prepare round {round_index + 1}/{args.rounds} {label}: first use {run['first_use_s']:.2f} s, "
                    f"hit {run['hit_s'] * 1e3:.0f} ms ({run['images']:,} images)")
    if "train" in args.parts:
        pair = {"folder": known[labels[0]], "idx": known[labels[2]]}
        with tempfile.TemporaryDirectory() as cache:
            for spec in pair.values():  # prepared once, before any timing
                run_worker("prepare", Path(cache), source=spec, hit_repeats=0)
            for threads in args.threads:
                runs = results["train"][str(threads)] = {"folder": [], "idx": []}
                for round_index in range(args.rounds):
                    for name in (("folder", "idx") if round_index % 2 == 0 else ("idx", "folder")):
                        run = run_worker("train", Path(cache), source=pair[name], steps=args.steps, threads=threads)
                        runs[name].append(run)
                        log(f"train {threads} thread(s) round {round_index + 1}/{args.rounds} {name}: "
                            f"{steady(run):.1f} img/s")
    if "cifar" in args.parts:
        with tempfile.TemporaryDirectory() as cache:
            run = run_worker("cifar", Path(cache), steps=args.cifar_steps, threads=args.cifar_threads,
                             images=args.cifar_images)
        results["cifar"] = run
        log(f"cifar10: {[round(BATCH / w['images_per_second'], 2) for w in run['windows']]} s per step")
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    results["flops"] = {preset: forward_gflops_per_image(preset) for preset in ("fashion-mnist", "cifar10")}
    return results


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def summarize(results: dict) -> dict:
    summary = {"prepare": {}, "train": {}, "cifar": None, "gpu_estimate": None}
    for label, runs in results["prepare"].items():
        if not runs:
            continue
        first = [r["first_use_s"] for r in runs]
        hit = [r["hit_s"] for r in runs]
        n = runs[0]["images"]
        summary["prepare"][label] = {
            "images": n, "image_shape": runs[0]["image_shape"], "classes": runs[0]["classes"], "runs": len(runs),
            "first_use_s": statistics.median(first), "first_use_min_s": min(first), "first_use_max_s": max(first),
            "first_use_ms_per_image": statistics.median(first) / n * 1e3,
            "hit_s": statistics.median(hit), "hit_us_per_image": statistics.median(hit) / n * 1e6,
            "skipped": runs[0]["skipped"]}
    for threads, runs in results["train"].items():
        folder, idx = [steady(r) for r in runs["folder"]], [steady(r) for r in runs["idx"]]
        nets = {r["net"] for r in runs["folder"] + runs["idx"]}
        if len(nets) != 1:
            raise SystemExit(f"the folder and IDX runs trained different networks: {nets}")
        ratios = [f / i for f, i in zip(folder, idx, strict=True)]
        loads = [max(a.get("load_average", [float("nan")]) + b.get("load_average", [float("nan")]))
                 for a, b in zip(runs["folder"], runs["idx"], strict=True)]
        summary["train"][threads] = {
            "folder_images_per_second": statistics.median(folder), "idx_images_per_second": statistics.median(idx),
            "folder_range": [min(folder), max(folder)], "idx_range": [min(idx), max(idx)],
            "ratio_median_of_rounds": statistics.median(ratios), "ratios": ratios, "round_max_load": loads,
            "ratio_of_medians": statistics.median(folder) / statistics.median(idx),
            "threads_in_worker": runs["folder"][0]["threads"], "options": runs["folder"][0]["options"],
            "parameters": runs["folder"][0]["parameters"], "runs": len(folder),
            "folder_images": runs["folder"][0]["images"], "idx_images": runs["idx"][0]["images"]}
    cifar = results.get("cifar")
    if cifar:
        per_step = [BATCH / w["images_per_second"] for w in cifar["windows"][1:]]
        step_s = statistics.median(per_step)
        summary["cifar"] = {"seconds_per_step": step_s, "range": [min(per_step), max(per_step)],
                            "windows": len(per_step), "warmup_step_s": BATCH / cifar["windows"][0]["images_per_second"],
                            "epoch_seconds": step_s * CIFAR_STEPS_PER_EPOCH, "images_per_second": BATCH / step_s,
                            "parameters": cifar["parameters"], "threads": cifar["threads"],
                            "options": cifar["options"]}
        summary["gpu_estimate"] = gpu_estimate(results["flops"])
    return summary


def gpu_estimate(flops: dict) -> dict | None:
    """An upper bound for one H200, scaled from the fashion-mnist preset's measured fp32 rate by forward FLOPs."""
    try:
        gpu = json.loads(GPU_RESULTS.read_text())
        measured = gpu["speed"]["fp32"]["steady_images_per_second"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ratio = flops["cifar10"] / flops["fashion-mnist"]
    images_per_second = measured / ratio
    return {"gpu": gpu["environment"]["gpu"], "torch": gpu["environment"]["torch"],
            "preset_images_per_second": measured, "flop_ratio": ratio,
            "preset_tflops_achieved": 3 * flops["fashion-mnist"] * measured / 1e3,
            "cifar10_images_per_second_at_most_this_slow": images_per_second,
            "epoch_seconds_upper_bound": CIFAR_STEPS_PER_EPOCH * BATCH / images_per_second}


def format_markdown(results: dict, summary: dict) -> str:
    m, s = results["machine"], results["settings"]
    lines = ["# Data sources on this machine: preparing, opening, and training from them", "",
             "Measured by `benchmarks/datasets.py`; its docstring says how each figure is taken. Every number here "
             "comes from the run below; nothing is carried over from other machines unless labelled an estimate.", "",
             f"- CPU (lscpu): {m['cpu']}",
             f"- code: {m.get('code', 'not recorded')}",
             f"- torch {m['torch']}, {m['date']}; load average (1 min) {m['load_average_at_start']:.2f} at the start, "
             f"{m['load_average_at_end']:.2f} at the end (other work shared the machine)",
             f"- command: `{s['command']}`", ""]
    if summary["prepare"]:
        lines += ["## Preparing a source, and opening it again", "",
                  f"Each source's train split into a fresh, empty cache; median of {s['rounds']} rounds (range in "
                  "brackets). Decoding runs in the data layer's own thread pool "
                  f"({min(8, 2 * (m['logical_cpus'] or 1))} threads here).", ""]
        lines += markdown_table(
            ["source", "images", "first use (prepare + load), s", "per image", "cache hit (open), s", "per image"],
            [(f"{label}, {'x'.join(map(str, row['image_shape'][::-1]))}, {row['classes']} classes",
              f"{row['images']:,}",
              f"{row['first_use_s']:.2f} ({row['first_use_min_s']:.2f}-{row['first_use_max_s']:.2f})",
              f"{row['first_use_ms_per_image']:.3f} ms", f"{row['hit_s']:.3f}", f"{row['hit_us_per_image']:.2f} µs")
             for label, row in summary["prepare"].items()], "lrrrrr")
        lines.append("")
    if summary["train"]:
        first = next(iter(summary["train"].values()))
        opts = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in first["options"].items())
        recorded = any(load == load for row in summary["train"].values() for load in row["round_max_load"])
        loads = " (highest 1-min load average of the pair)" if recorded else ""
        lines += ["## Training speed on prepared data: a folder of PNGs against IDX files", "",
                  f"The `fashion-mnist` preset's UNet ({first['parameters'] / 1e6:.2f}M parameters, 28x28x1, "
                  f"10 classes; the same network for both sources), fp32, batch {s['batch']}, "
                  f"resolved options: {opts}. "
                  f"{s['steps']} steps per run in a fresh subprocess, windows of {s['log_every']} steps, the first "
                  f"left out; {first['runs']} rounds per thread count, alternating which source runs first. The "
                  f"folder holds {first['folder_images']:,} images, the IDX data {first['idx_images']:,}.", ""]
        lines += markdown_table(
            ["torch threads", "mnist-10k folder, img/s", "Fashion-MNIST IDX, img/s", "folder / IDX (median of rounds)",
             f"per-round ratios{loads}"],
            [(threads, f"{row['folder_images_per_second']:.0f} ({row['folder_range'][0]:.0f}-"
              f"{row['folder_range'][1]:.0f})",
              f"{row['idx_images_per_second']:.0f} ({row['idx_range'][0]:.0f}-{row['idx_range'][1]:.0f})",
              f"{row['ratio_median_of_rounds']:.3f}",
              ", ".join(per_round(r, load) for r, load in zip(row["ratios"], row["round_max_load"], strict=True)))
             for threads, row in summary["train"].items()], "rrrrl")
        lines.append("")
    cifar = summary["cifar"]
    if cifar:
        opts = ", ".join(f"{k} {'on' if v else 'off'}" for k, v in cifar["options"].items())
        lines += ["## What the `cifar10` preset costs per epoch", "",
                  f"The preset's whole Trainer loop ({cifar['parameters'] / 1e6:.2f}M parameters; "
                  f"{results['flops']['cifar10']:.2f} GFLOP forward per image, against "
                  f"{results['flops']['fashion-mnist']:.3f} for the fashion-mnist preset) on "
                  f"{s['cifar_images']:,} random 32x32x3 images, batch {s['batch']}, {cifar['threads']} torch threads, "
                  f"resolved options: {opts}. One window per step; the first step "
                  f"({cifar['warmup_step_s']:.1f} s) left out.", "",
                  *markdown_table(
                      ["device", "s per step (median of windows)", "range", "img/s",
                       "one epoch (50,000 images, 390 steps)"],
                      [(f"this CPU, {cifar['threads']} threads (measured, {cifar['windows']} windows)",
                        f"{cifar['seconds_per_step']:.1f}", f"{cifar['range'][0]:.1f}-{cifar['range'][1]:.1f}",
                        f"{cifar['images_per_second']:.2f}",
                        f"{cifar['epoch_seconds']:.0f} s = {cifar['epoch_seconds'] / 3600:.1f} h (extrapolated)")],
                      "lrrrr")]
        gpu = summary["gpu_estimate"]
        lines += ["", "**One GPU: not measured.** This run had no GPU."]
        if gpu:
            lines += [
                "", f"*Estimate, not a measurement:* `docs/gpu-h200/results.json` measured the fashion-mnist preset "
                f"on one {gpu['gpu']} at {gpu['preset_images_per_second']:,.0f} images/s in fp32 (torch "
                f"{gpu['torch']}). The cifar10 UNet costs {gpu['flop_ratio']:.1f}x its forward FLOPs per image. "
                f"Scaling the time by FLOPs gives {gpu['cifar10_images_per_second_at_most_this_slow']:.0f} images/s, "
                f"about {gpu['epoch_seconds_upper_bound']:.0f} s per epoch, as an upper bound on the time: the "
                f"preset ran at {gpu['preset_tflops_achieved']:.1f} TFLOP/s (3 x forward FLOPs x images/s), "
                "bound by kernel launches rather than arithmetic, and a network with far more work per kernel "
                "launch should use the GPU at least as well. The true figure is likely well below the bound; it needs "
                "a measurement."]
        lines.append("")
    return "\n".join(lines)


def per_round(ratio: float, load: float) -> str:
    return f"{ratio:.3f}" if load != load else f"{ratio:.3f} (load {load:.1f})"  # NaN: not recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"),
                        help="the folder holding mnist-10k/ and fashion-mnist/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="torch thread counts for the training-speed runs")
    parser.add_argument("--steps", type=int, default=20, help=f"steps per training-speed run (windows of {LOG_EVERY})")
    parser.add_argument("--cifar-steps", type=int, default=4, help="cifar10 steps (the first is warm-up)")
    parser.add_argument("--cifar-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cifar-images", type=int, default=2560)
    parser.add_argument("--parts", default="prepare,train,cifar", help="which measurements to run")
    parser.add_argument("--json", help="write every measurement to this JSON file")
    parser.add_argument("--markdown", help="write the report to this Markdown file (e.g. docs/reports/datasets.md)")
    parser.add_argument("--from-json", help="measure nothing: write the report of a run saved with --json")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with contextlib.redirect_stdout(sys.stderr):  # the data layer prints; stdout's last line is the result
            result = WORKERS[args.worker](**json.loads(args.worker_args))
        print(json.dumps(result))
        return
    args.threads = [int(t) for t in args.threads.split(",") if t]
    args.parts = set(args.parts.split(","))
    if args.rounds < 1 or args.steps < 3 * LOG_EVERY or args.cifar_steps < 2 or min(args.threads, default=0) < 1 \
            or not args.parts <= {"prepare", "train", "cifar"}:
        parser.error(f"--rounds >= 1, --steps >= {3 * LOG_EVERY}, --cifar-steps >= 2, --threads positive, "
                     "--parts of prepare,train,cifar")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        results.pop("summary", None)
    else:
        results = measure(args)
    report(results, summarize, format_markdown, args.json, args.markdown)


if __name__ == "__main__":
    main()
