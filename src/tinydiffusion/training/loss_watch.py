"""The losses of the steps the device has run, read back in batches, and what a non-finite one does. A step's
loss stays on the device until the host needs it (a log line, a checkpoint, the NaN check), so the host can queue
the next step without waiting. The update of a non-finite step was skipped on the device already (step.py);
train.on_nan "stop" then ends the run here, "skip" counts it and goes on.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..errors import UserError


class LossWatch:
    def __init__(self, on_nan: str, run_dir: Path):
        self.on_nan, self.run_dir = on_nan, run_dir
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) the host has not read yet
        self.window: list[float] = []  # finite losses read since the last log line
        self.skipped = 0  # non-finite steps so far, over the whole run
        self.last = float("nan")

    def queue(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, loss))

    def read(self, keep_last: bool = False) -> None:
        """Read the pending losses (one host-device synchronisation for all of them). keep_last leaves the
        newest unread, so the host stays a step ahead of the GPU."""
        pending = self.pending[:-1] if keep_last else self.pending
        if not pending:
            return
        self.pending = self.pending[len(pending):]
        values = torch.stack([loss for _, loss in pending]).tolist()
        for (step, _), value in zip(pending, values, strict=True):
            if math.isfinite(value):
                self.window.append(value)
                self.last = value
            elif self.on_nan == "stop":
                last = ckpt.latest_checkpoint(self.run_dir)
                kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
                raise UserError(f"the loss became {value} at step {step}; stopped, {kept}. Lower --train.lr, "
                                "or pass --train.on_nan skip to skip such steps.")
            else:
                self.skipped += 1

    def window_mean(self) -> float:
        """The mean loss of the steps read since the last log line; the window then starts afresh."""
        mean = sum(self.window) / max(1, len(self.window))
        self.window = []
        return mean

    def state(self) -> dict:
        """What a checkpoint keeps, so that the first log line after a resume is the uninterrupted run's."""
        return {"window_losses": list(self.window), "skipped_steps": self.skipped}

    def load_state(self, state: dict) -> None:
        self.window = [float(v) for v in state.get("window_losses", [])]  # absent in older checkpoints
        self.skipped = int(state.get("skipped_steps", 0))
