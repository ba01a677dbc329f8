"""Training throughput on CPU: two torchrun processes (gloo) against one process, on this machine.

Each configuration trains the `fashion-mnist` preset network (1.17M parameters) on random 28x28
images through the real command line (`tinydiffusion train`, under `torchrun` for two processes),
and reads images/second from metrics.jsonl. The first logged window (start-up, first steps) is
dropped; the rest of the windows give a run's median, and the table shows the median over rounds.
Configurations run in interleaved rounds so that load from other processes hits all of them alike.

Run: `python benchmarks/distributed_cpu.py [--rounds 3] [--steps 40] [--batch-size 128]`.
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

import numpy as np
from common import cpu_description

from tinydiffusion.data import write_idx

# (label, processes, torch threads per process)
CONFIGS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]


def make_data(folder: Path, num_images: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", num_images), ("t10k", 64)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def train_once(data_dir: Path, run_dir: Path, processes: int, threads: int, steps: int, batch_size: int,
               log_every: int) -> list[float]:
    """One training run; images/second of each logged window after the first."""
    launcher = [sys.executable, "-m", "tinydiffusion"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                    "-m", "tinydiffusion"]
    args = ["train", "--preset", "fashion-mnist", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            "--max-steps", str(steps), "--batch-size", str(batch_size), "--device", "cpu", "--no-progress",
            "--train.threads", str(threads), "--train.log_every", str(log_every),
            "--train.sample_every_epoch", "false", "--train.precision", "fp32", "--train.compile", "off"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("WORLD_SIZE", None)
    result = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"training failed ({' '.join(launcher + args)}):\n{result.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["images_per_second"] for r in records[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration (interleaved)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--log-every", type=int, default=10, help="steps per timing window")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (split over the processes)")
    args = parser.parse_args()

    results: dict[str, list[float]] = {label: [] for label, _, _ in CONFIGS}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        # Enough images that no epoch ends inside the timed steps (an epoch end writes a checkpoint).
        data_dir = make_data(Path(tmp) / "data", args.steps * args.batch_size + args.batch_size)
        for round_index in range(args.rounds):
            for label, processes, threads in CONFIGS:
                loads.append(os.getloadavg()[0])
                run_dir = Path(tmp) / f"run-{round_index}-{processes}-{threads}"
                windows = train_once(data_dir, run_dir, processes, threads, args.steps, args.batch_size,
                                     args.log_every)
                results[label].append(statistics.median(windows))
                print(f"round {round_index + 1}: {label}: {results[label][-1]:.0f} images/s "
                      f"(windows {', '.join(f'{w:.0f}' for w in windows)})", file=sys.stderr)

    base = statistics.median(results[CONFIGS[0][0]])
    print(f"\nfashion-mnist UNet, global batch {args.batch_size}, fp32, {args.steps} steps per run, "
          f"median of {args.rounds} runs; {cpu_description()}, 1-minute load average "
          f"{min(loads):.1f}-{max(loads):.1f} before the runs\n")
    print(f"| {'configuration':<24} | total images/s | per process | vs 1 process x 1 thread | runs |")
    print(f"| {'-' * 24} | -------------: | ----------: | ----------------------: | ---- |")
    for label, processes, _ in CONFIGS:
        total = statistics.median(results[label])
        runs = ", ".join(f"{v:.0f}" for v in results[label])
        print(f"| {label:<24} | {total:14.0f} | {total / processes:11.0f} | {total / base:22.2f}x | {runs} |")


if __name__ == "__main__":
    main()
