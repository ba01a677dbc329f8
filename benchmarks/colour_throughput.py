"""Colour throughput: the colour presets' networks against the 28x28x1 reference network, side by side.

For each network, in one process on the CPU in fp32, round after round (each round measures every network in
turn, so load from elsewhere falls on all alike; every figure is the median over rounds):

  training: images/s of the bare step (forward, the MSE loss, backward, AdamW) on a fixed batch of 128 (--batch);
  sampling: images/s of one network evaluation (eval mode, no_grad) on a batch twice that;
  forward FLOPs per image (torch.utils.flop_counter: convolutions, matrix products, attention; a multiply-add is 2).

The target (issue 25): at 32x32x3, training and sampling at >= 60% of the reference's images/s.

    python benchmarks/colour_throughput.py [--rounds 5] [--threads 0] [--batch 128] \
        [--markdown docs/reports/runs/colour_throughput.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import machine_description, markdown_table
from torch.utils.flop_counter import FlopCounterMode

from tinydiffusion.nets import NetConfig, build_network, count_parameters
from tinydiffusion.presets import get_preset
from tinydiffusion.words import count

TRAIN_BATCH, MAX_BATCH = 128, 1024  # a batch of 2 x 1024 64x64x3 images is 100 MB; more only costs memory
NETWORKS = {  # name -> the preset whose network it is; the first is the reference
    "fashion-mnist (28x28x1, reference)": "fashion-mnist",
    "colour-32 (32x32x3)": "colour-32",
    "colour-64 (64x64x3)": "colour-64",
}


def batch_for(config: NetConfig, size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (size, config.in_channels, config.image_size, config.image_size)
    x, t = torch.randn(shape, generator=generator), torch.rand(size, generator=generator)
    y = torch.randint(0, config.num_classes + 1, (size,), generator=generator)
    return x, t, y, torch.randn(shape, generator=generator)


class Bench:
    """One network with its optimizer and fixed batches; each call of a rate method times a few steps."""

    def __init__(self, config: NetConfig, batch: int = TRAIN_BATCH):
        torch.manual_seed(0)
        self.config, self.net = config, build_network(config)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=2e-3)
        self.train_batch, self.sample_batch = batch_for(config, batch), batch_for(config, 2 * batch, 1)
        x, t, y, _ = batch_for(config, 1)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self.net(x, t, y)
        self.flops = counter.get_total_flops()
        self.train_rate(1)  # warm-up: allocations and kernel choices
        self.sample_rate(1)

    def train_rate(self, steps: int = 3) -> float:
        x, t, y, target = self.train_batch
        self.net.train()
        start = time.perf_counter()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(self.net(x, t, y), target).backward()
            self.optimizer.step()
        return steps * len(x) / (time.perf_counter() - start)

    @torch.no_grad()
    def sample_rate(self, batches: int = 2) -> float:
        x, t, y, _ = self.sample_batch
        self.net.eval()
        start = time.perf_counter()
        for _ in range(batches):
            self.net(x, t, y)
        return batches * len(x) / (time.perf_counter() - start)


def measure(rounds: int, batch: int = TRAIN_BATCH) -> dict[str, dict]:
    benches = {name: Bench(get_preset(preset).net, batch) for name, preset in NETWORKS.items()}
    rates = {name: {"train": [], "sample": []} for name in benches}
    for _ in range(rounds):
        for name, bench in benches.items():
            rates[name]["train"].append(bench.train_rate())
            rates[name]["sample"].append(bench.sample_rate())
    return {name: {"parameters": count_parameters(bench.net), "gflops": bench.flops / 1e9,
                   "train": statistics.median(rates[name]["train"]), "sample": statistics.median(rates[name]["sample"])}
            for name, bench in benches.items()}


def format_markdown(results: dict[str, dict], rounds: int, batch: int = TRAIN_BATCH) -> str:
    reference = next(iter(results.values()))
    lines = ["# Colour throughput", "", "Measured by `benchmarks/colour_throughput.py` (its docstring says how).", "",
             f"- machine: {machine_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads, fp32",
             f"- medians of {count(rounds, 'round')}; training batch {batch} (bare step), sampling batch "
             f"{2 * batch} (one network evaluation)", ""]
    lines += markdown_table(
        ["network", "parameters", "forward GFLOPs / image", "training images/s", "vs reference", "sampling images/s",
         "vs reference"],
        [(name, f"{r['parameters'] / 1e6:.2f}M", f"{r['gflops']:.3f}", f"{r['train']:.0f}",
          f"{r['train'] / reference['train']:.2f}", f"{r['sample']:.0f}", f"{r['sample'] / reference['sample']:.2f}")
         for name, r in results.items()], "lrrrrrr")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; every figure is the median")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--batch", type=int, default=TRAIN_BATCH, help="the training batch; sampling's is twice it")
    parser.add_argument("--markdown", help="write the table here (e.g. docs/reports/runs/colour_throughput.md)")
    args = parser.parse_args()
    if args.rounds < 1 or args.threads < 0 or not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--rounds must be at least 1, --threads at least 0 and --batch between 1 and {MAX_BATCH}")
    if args.markdown and not os.path.isdir(os.path.dirname(os.path.abspath(args.markdown))):
        parser.error(f"{os.path.dirname(args.markdown)} is not a folder, so {args.markdown} cannot be written")
    if args.threads:
        torch.set_num_threads(args.threads)
    text = format_markdown(measure(args.rounds, args.batch), args.rounds, args.batch)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
