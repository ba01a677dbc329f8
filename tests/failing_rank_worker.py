"""A torchrun worker for tests/test_distributed.py: tinydiffusion's command line, with one rank made to fail.

FAIL_RANK=r and FAIL_STEP=s make rank r raise when it draws the batch of step s. The fault is injected here, in
the test's own worker, around the public Batches.draw, so that the training code carries no hook for it.
"""

import os

import torch.distributed as dist

from tinydiffusion.cli import run
from tinydiffusion.training import Batches

FAIL_RANK, FAIL_STEP = int(os.environ["FAIL_RANK"]), int(os.environ["FAIL_STEP"])
real_draw = Batches.draw


def failing_draw(self, step):
    if dist.get_rank() == FAIL_RANK and step == FAIL_STEP:
        raise RuntimeError(f"injected failure on rank {dist.get_rank()} at step {step}")
    return real_draw(self, step)


Batches.draw = failing_draw
run()
