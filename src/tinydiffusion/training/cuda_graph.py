"""Opt-in (train.cuda_graph on): the whole training step replayed as one CUDA graph; tests/test_training_options.py
holds it to the eager step's results."""

from __future__ import annotations

import torch


class GraphedStep:
    """A whole training step (forward, backward, clipping, AdamW, EMA) recorded once as a CUDA graph and replayed
    for every later step ("whole-network capture" in PyTorch's CUDA graphs notes): a small network's step is hundreds
    of small kernels whose launches, not their arithmetic, set its speed on a GPU. Batches are drawn eagerly and
    copied into the graph's fixed inputs; the LR and EMA weight are device tensors the Trainer refills before each
    step. Called like the step it wraps: step(x0, y, noise, *drawn) -> the loss (0-dim, on the device)."""

    WARMUP_STEPS = 3  # eager steps on a side stream first, as capture requires

    def __init__(self, step, optimizer: torch.optim.Optimizer, device: torch.device):
        self.step, self.optimizer, self.device = step, optimizer, device
        self.warm_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor | None] = []
        self.loss: torch.Tensor | None = None

    def __call__(self, *batch) -> torch.Tensor:
        if self.graph is None and self.warm_steps < self.WARMUP_STEPS:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                loss = self.step(*batch)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.warm_steps += 1
            return loss
        if self.graph is None:  # capture records without running: the replay below runs this step
            self.inputs = [None if value is None else value.clone() for value in batch]
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)  # gradients are allocated from the graph's memory pool
            with torch.cuda.graph(self.graph):
                self.loss = self.step(*self.inputs)
        for static, value in zip(self.inputs, batch, strict=True):
            if static is not None:
                static.copy_(value)
        self.graph.replay()
        return self.loss.clone()  # the next replay overwrites self.loss
