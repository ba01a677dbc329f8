"""Training: one process or many (torchrun) run the same code.

    trainer.py      the Trainer: the loop of steps, the learning rate, checkpoints, logs, sample grids
    ema.py          the moving average of the weights
    distributed.py  joining a torchrun job
    options.py      the speed options (precision, channels-last, fused AdamW, compile) resolved per device
    signals.py      SIGINT/SIGTERM: finish the step, checkpoint, exit
    cuda_graph.py   opt-in: the whole step replayed as one CUDA graph
"""

from .distributed import Distributed, setup_distributed
from .ema import EMA
from .options import resolve_options
from .signals import StopRequest
from .trainer import Trainer, TrainResult, check_training_memory, epoch_order, learning_rate, record_data, train

__all__ = ["EMA", "Distributed", "StopRequest", "TrainResult", "Trainer", "check_training_memory", "epoch_order",
           "learning_rate", "record_data", "resolve_options", "setup_distributed", "train"]
