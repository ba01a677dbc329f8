"""Training: one process or many (torchrun) run the same code.

    trainer.py      the Trainer: the loop of steps, the learning rate, logs; it hands the rest to:
    batches.py      the step's batch: the epoch's order (rarer classes favoured if asked), labels with dropout,
                    flips, the noise, the task's draws
    step.py         one training step: the loss, backward, clipping, AdamW, the EMA
    checkpoints.py  the run saved and restored, and the run directory's files on a resume
    reports.py      at each report: a sample grid, an FD (callables the caller may pass instead)
    tasks.py        what a step minimises: the diffusion loss, or a student's distillation (distillation.py)
    ema.py          the moving average of the weights
    budget.py       a run fitted to a time budget
    loss_watch.py   the steps' losses read back from the device; a non-finite one skipped or stopped on
    distributed.py  joining a torchrun job
    options.py      the speed options (precision, channels-last, fused AdamW, compile) resolved per device
    signals.py      SIGINT/SIGTERM: finish the step, checkpoint, exit
    cuda_graph.py   opt-in: the whole step replayed as one CUDA graph
"""

from .batches import Batch, Batches, balanced_draw, epoch_order
from .ema import EMA
from .options import resolve_options
from .signals import StopRequest
from .trainer import Trainer, learning_rate, train

__all__ = ["EMA", "Batch", "Batches", "StopRequest", "Trainer", "balanced_draw", "epoch_order", "learning_rate",
           "resolve_options", "train"]
