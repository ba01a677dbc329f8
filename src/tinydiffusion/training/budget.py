"""A run fitted to a time budget: measure the speed at the peak learning rate, then fix the step count once.

A run that is merely stopped when its time is up never decays its learning rate, and its EMA never ends where
the run does. Instead the run times its steps, and plans its whole length from that speed; the
plan is recorded in config.json (train.planned_steps), so a resumed run continues the same schedule exactly.

The speed is the median of the timed steps' durations, not their mean: another program busy for part of the
window (a browser, a test run) slows some steps, and a mean would plan the whole run from them.
"""

from __future__ import annotations

import math
import statistics
import time

WARMUP_STEPS = 2  # the first steps run slow (allocations, kernel choice): never timed
MIN_TIMED_STEPS = 5
# The speed is timed from 5% to 50% of the budget, with the learning rate held at its peak; it then decays over
# the second half. A CPU's first seconds run slower than its steady state, and a shared machine's speed drifts by
# 20% within minutes (docs/colour.md): half the run is timed, so that the plan rests on the speed the run will
# see. Holding the peak and decaying at the end is a warm-up-stable-decay schedule, reported to match a cosine
# decay over the whole run at equal length (Hagele et al. 2024, "Scaling laws and compute-optimal training beyond
# fixed training durations"); docs/colour.md measures it against an early decay (train.decay_from).
TIMED_FROM, TIMED_UNTIL = 0.05, 0.50  # train.decay_from sets the end (0.8 in the colour presets)
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
    """Times the steps over the first half of the budget (or up to `timed_until` of it) and then proposes the run's
    total step count.

    `report_cost` is the time a report (a sample grid, an FD) is expected to take, in seconds per training step
    of the measured speed, spread over `report_every` steps."""

    def __init__(self, budget: float, start: float, report_steps_cost: float = 0.0, report_every: int = 0,
                 timed_until: float = TIMED_UNTIL):
        self.budget, self.start = budget, start
        self.report_steps_cost, self.report_every = report_steps_cost, report_every
        self.timed_from: float | None = None
        self.last = 0.0  # when the previous timed step ended
        self.durations: list[float] = []  # of the timed steps, in seconds
        self.since, self.until = TIMED_FROM * budget, timed_until * budget  # seconds into the run

    @property
    def timed_steps(self) -> int:
        return len(self.durations)

    def after_step(self, step: int, now: float | None = None) -> int | None:
        """Called after each step (`step`: the steps done); the planned total once measured, else None."""
        now = time.perf_counter() if now is None else now
        if step < WARMUP_STEPS or now - self.start < self.since:
            return None
        if self.timed_from is None:
            self.timed_from = self.last = now
            return None
        self.durations.append(now - self.last)
        self.last = now
        if self.timed_steps < MIN_TIMED_STEPS or now - self.start < self.until:
            return None
        seconds_per_step = statistics.median(self.durations)
        if self.report_every:  # each report costs about report_steps_cost steps' time
            seconds_per_step *= 1 + self.report_steps_cost / self.report_every
        remaining = MARGIN * self.budget - (now - self.start)
        return step + max(1, math.floor(remaining / seconds_per_step))
