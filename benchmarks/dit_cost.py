"""What a DiT costs next to the UNet preset: parameters, forward FLOPs, training images/second.

A training step is forward, backward and AdamW at batch 128 on 28x28x1 inputs, fp32 unless --bf16.
The networks are timed in interleaved rounds and the median kept, so that load from other processes
hits all of them alike. On a CPU shared with other work, images per CPU-second (process time) is the
steadier measure, and one thread (--threads 1) avoids threads spinning while they wait for a core.

    python benchmarks/dit_cost.py                      # the CPU-sized networks, this CPU
    python benchmarks/dit_cost.py --threads 1
    python benchmarks/dit_cost.py --device cuda --big  # also the GPU-sized ones
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tinydiffusion.nets import DiTConfig, build_network, count_parameters
from tinydiffusion.presets import FASHION_MNIST_UNET

BATCH = 128


def dit(patch: int, hidden: int, depth: int, heads: int) -> DiTConfig:
    return DiTConfig(image_size=28, in_channels=1, num_classes=10,
                     patch_size=patch, hidden_size=hidden, depth=depth, num_heads=heads)


# Patch 4 (7x7 = 49 tokens) against patch 2 (14x14 = 196 tokens) at about the UNet's cost.
CPU_SIZED = {
    "unet preset": FASHION_MNIST_UNET,
    "dit p2 h64 d4": dit(2, 64, 4, 2),
    "dit p2 h128 d4": dit(2, 128, 4, 4),
    "dit p4 h128 d4": dit(4, 128, 4, 4),
    "dit p4 h128 d5": dit(4, 128, 5, 4),
    "dit-s: p4 h144 d4": dit(4, 144, 4, 3),
    "dit p4 h160 d3": dit(4, 160, 3, 5),
    "dit p4 h192 d3": dit(4, 192, 3, 3),
}
GPU_SIZED = {
    "dit p2 h256 d8": dit(2, 256, 8, 4),
    "dit-b: p2 h384 d12": dit(2, 384, 12, 6),  # the shape of the paper's DiT-S/2
}


class Trainer:
    """One network, its optimizer and a fixed batch, ready to time training steps."""

    def __init__(self, config: DiTConfig, device: torch.device, bf16: bool):
        torch.manual_seed(0)
        self.device = device
        self.net = build_network(config).to(device).train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)
        self.x = torch.randn(BATCH, 1, 28, 28, device=device)
        self.t = torch.rand(BATCH, device=device) * 1000
        self.y = torch.randint(0, 11, (BATCH,), device=device)
        self.target = torch.randn_like(self.x)
        self.autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else contextlib.nullcontext()
        for _ in range(2):
            self.step()  # warm up the allocator and kernels

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = torch.nn.functional.mse_loss(self.net(self.x, self.t, self.y).float(), self.target)
        loss.backward()
        self.opt.step()

    def images_per_second(self, steps: int) -> tuple[float, float]:
        """Images per second of wall time, and per second of this process's CPU time."""
        self.sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        self.sync()
        images = steps * BATCH
        return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def forward_mflop_per_image(self) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self.net(self.x, self.t, self.y)
        return counter.get_total_flops() / BATCH / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per network; the median is kept")
    parser.add_argument("--steps", type=int, default=1, help="training steps per round")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--big", action="store_true", help="also the GPU-sized networks (slow on a CPU)")
    parser.add_argument("--only", nargs="*", default=None, help="table names to time (UNet always)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    candidates = {**CPU_SIZED, **(GPU_SIZED if args.big else {})}
    names = [n for n in candidates if args.only is None or n == "unet preset" or n in args.only]
    trainers = {name: Trainer(candidates[name], device, args.bf16) for name in names}
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            per_wall_second, per_cpu_second = trainer.images_per_second(args.steps)
            wall[name].append(per_wall_second)
            cpu[name].append(per_cpu_second)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, batch {BATCH}, {'bf16' if args.bf16 else 'fp32'}, 28x28x1, "
          f"median of {args.rounds} rounds of {args.steps} step(s)")
    print(f"{'network':<22}{'params':>12}{'fwd MFLOP/img':>15}{'img/s wall':>12}{'vs UNet':>9}"
          f"{'img/cpu-s':>11}{'vs UNet':>9}")
    unet_wall, unet_cpu = statistics.median(wall["unet preset"]), statistics.median(cpu["unet preset"])
    for name, trainer in trainers.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<22}{count_parameters(trainer.net):>12,}{trainer.forward_mflop_per_image():>15.1f}"
              f"{w:>12.1f}{w / unet_wall:>9.2f}{c:>11.1f}{c / unet_cpu:>9.2f}")


if __name__ == "__main__":
    main()
