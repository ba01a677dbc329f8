"""A torchrun worker for tests/test_distributed.py: tinydiffusion's command line, with one rank made to fail.

FAIL_RANK=r and FAIL_STEP=s make rank r raise at step s. The fault is injected here, in the test's own
worker, so that the training code carries no hook for it.
"""

import os

from tinydiffusion import training
from tinydiffusion.cli import run

FAIL_RANK, FAIL_STEP = int(os.environ["FAIL_RANK"]), int(os.environ["FAIL_STEP"])
real_train_step = training.Trainer._train_step


def failing_train_step(self, order, index_in_epoch):
    if self.dist.rank == FAIL_RANK and self.step == FAIL_STEP:
        raise RuntimeError(f"injected failure on rank {self.dist.rank} at step {self.step}")
    return real_train_step(self, order, index_in_epoch)


training.Trainer._train_step = failing_train_step
run()
