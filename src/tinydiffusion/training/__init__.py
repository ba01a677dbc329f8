"""Training: one process or many (torchrun) run the same code. The Trainer's loop (trainer.py) hands each step's
batch to batches.py and the step itself to step.py; docs/explanation/code-map.md lists the other parts.
"""

from .batches import Batch, Batches, balanced_draw, epoch_order
from .ema import EMA
from .options import resolve_options
from .signals import StopRequest
from .trainer import Trainer, learning_rate, train

__all__ = ["EMA", "Batch", "Batches", "StopRequest", "Trainer", "balanced_draw", "epoch_order", "learning_rate",
           "resolve_options", "train"]
