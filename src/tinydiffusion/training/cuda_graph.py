"""Opt-in (train.cuda_graph on): the whole training step replayed as one CUDA graph. Not yet measured on a GPU,
so nothing turns it on by default; tests/test_training_options.py holds it to the eager step's results."""

from __future__ import annotations

import torch


class CapturedStep:
    """A whole training step (forward, backward, clipping, AdamW, EMA) recorded once as a CUDA graph and
    replayed for every later step: "whole-network capture" in PyTorch's CUDA graphs notes.

    The preset's step is hundreds of small kernels; on a GPU their launches, not their arithmetic,
    set its speed (docs/gpu-h200), and a replay launches them all at once. Batches are drawn eagerly
    and copied into the graph's fixed input tensors; the LR and EMA weight are device tensors the
    Trainer refills before each replay. Capture records without running, so replay follows at once.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream first, as capture requires

    def __init__(self, trainer, x0, y, timesteps, noise):
        self.inputs = [x0.clone(), None if y is None else y.clone(), timesteps.clone(), noise.clone()]
        self.graph = torch.cuda.CUDAGraph()
        trainer.optimizer.zero_grad(set_to_none=True)  # gradients are allocated from the graph's memory pool
        with torch.cuda.graph(self.graph):
            self.loss = trainer._forward_backward_update(*self.inputs)

    def replay(self, *batch) -> torch.Tensor:
        for static, value in zip(self.inputs, batch, strict=True):
            if static is not None:
                static.copy_(value)
        self.graph.replay()
        return self.loss.clone()  # the next replay overwrites self.loss
