"""SIGINT and SIGTERM during training: finish the step, checkpoint, exit 0."""

from __future__ import annotations

import contextlib
import os
import signal
import time


class StopRequest:
    """SIGINT/SIGTERM: finish the step, checkpoint, exit 0. A second signal exits at once.

    A repeat within a second counts as the same request: SLURM signals every process of a job step
    and torchrun forwards the signal again, so each worker receives it twice.
    """

    def __init__(self):
        self.requested = False
        self._first_signal_time = 0.0
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            if time.monotonic() - self._first_signal_time > 1.0:
                os._exit(128 + signum)
            return
        self.requested, self._first_signal_time = True, time.monotonic()

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
