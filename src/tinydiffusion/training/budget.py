"""A run fitted to a time budget: measure the speed over the first steps, then fix the step count once.

A run that is merely stopped when its time is up never decays its learning rate, and its EMA never ends where
the run does. Instead the run takes a few steps, times them, and plans its whole length from that speed; the
plan is recorded in config.json (train.planned_steps), so a resumed run continues the same schedule exactly.
"""

from __future__ import annotations

import math
import time

WARMUP_STEPS = 2  # the first steps run slow (allocations, kernel choice): never timed
MIN_TIMED_STEPS = 5
# The speed is timed between 5% and 10% of the budget (at most from 60 s to 120 s): a CPU's first seconds run
# 10-20% slower than its steady state, and a plan made from them ends the run that much early.
TIMED_FROM, TIMED_UNTIL, MAX_TIMED_UNTIL = 0.05, 0.10, 120.0
MARGIN = 0.98  # plan to end a little before the budget: the final checkpoint and grid take time too


def budget_seconds(train_config) -> float:
    """The time budget in seconds, from train.max_seconds or train.minutes; 0: none."""
    return train_config.max_seconds or 60.0 * train_config.minutes


def last_step(train_config, steps_per_epoch: int) -> int | None:
    """The run's last step: the steps a budget planned, else train.max_steps, else the epochs' steps; None while a
    budget has yet to be planned."""
    t = train_config
    if t.planned_steps or t.max_steps:
        return t.planned_steps or t.max_steps
    return None if budget_seconds(t) > 0 else t.epochs * steps_per_epoch


class StepPlanner:
    """Times the steps after a short warm-up and, once it has seen enough, proposes the run's total step count.

    `report_cost` is the time a report (a sample grid, an FD) is expected to take, in seconds per training step
    of the measured speed, spread over `report_every` steps."""

    def __init__(self, budget: float, start: float, report_steps_cost: float = 0.0, report_every: int = 0):
        self.budget, self.start = budget, start
        self.report_steps_cost, self.report_every = report_steps_cost, report_every
        self.timed_from: float | None = None
        self.timed_steps = 0
        self.until = min(MAX_TIMED_UNTIL, TIMED_UNTIL * budget)  # seconds into the run
        self.since = self.until * TIMED_FROM / TIMED_UNTIL

    def after_step(self, step: int, now: float | None = None) -> int | None:
        """Called after each step (`step`: the steps done); the planned total once measured, else None."""
        now = time.perf_counter() if now is None else now
        if step < WARMUP_STEPS or now - self.start < self.since:
            return None
        if self.timed_from is None:
            self.timed_from, self.timed_steps = now, 0
            return None
        self.timed_steps += 1
        measured = now - self.timed_from
        if self.timed_steps < MIN_TIMED_STEPS or now - self.start < self.until:
            return None
        seconds_per_step = measured / self.timed_steps
        if self.report_every:  # each report costs about report_steps_cost steps' time
            seconds_per_step *= 1 + self.report_steps_cost / self.report_every
        remaining = MARGIN * self.budget - (now - self.start)
        return step + max(1, math.floor(remaining / seconds_per_step))
