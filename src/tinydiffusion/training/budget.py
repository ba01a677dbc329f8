"""A run fitted to a time budget: its clock, its plan, and the plan kept to the budget as the pace changes
(docs/explanation/time-budgets.md: each decision, with the runs that chose it, and what a resume's budget is).

A run merely stopped when its time is up never decays its learning rate, and its EMA never ends where the run does.
Instead the run times its steps and plans its length from that speed: the warm-up cut to fit (train.planned_warmup),
then at train.decay_from of the budget the steps that fit (train.planned_steps, decaying from train.planned_at),
re-planned when the pace drifts. Each decision is recorded in the run's config, which every checkpoint carries, so a
resume continues its checkpoint's plan bit for bit. The speed is a median of the steps' durations, not their mean:
another program busy for part of the window slows some steps, and a mean would plan the whole run from them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque
from dataclasses import dataclass

WARMUP_STEPS = 2  # each invocation's first steps run slow (allocations, kernel choice): never timed
MIN_TIMED_STEPS = 5
# The speed is timed from 5% of the budget to train.decay_from of it, at the peak learning rate: a CPU's first
# seconds run slow and a shared machine's speed drifts by 20% within minutes, so a long window plans from the speed
# the run will see. Holding the peak and decaying at the end is a warm-up-stable-decay schedule, reported to match a
# cosine decay over the whole run at equal length (Hagele et al. 2024, "Scaling laws and compute-optimal training
# beyond fixed training durations").
TIMED_FROM = 0.05
MARGIN = 0.98  # plan to end a little before the budget
WARMUP_SHARE = 0.25  # the longest warm-up a plan leaves in place, as a share of its steps
LATE, EARLY = 0.02, 0.05  # re-plan when the run would end this share of the budget past it, or short of it ...
MIN_SLACK = 0.5  # ... and by at least this many seconds: jitter is not worth a new schedule
RECENT_STEPS = 32  # the pace after the plan: the median of the latest steps since the last decision, this many
PACE_STEPS = 8  # ... and at least this many, so that a plan is not made again from the steps that made it


def budget_seconds(train_config) -> float:
    """The time budget in seconds, from train.max_seconds or train.minutes; 0: none."""
    return train_config.max_seconds or 60.0 * train_config.minutes


def last_step(train_config, steps_per_epoch: int) -> int | None:
    """The run's last step: the steps a budget planned, else train.max_steps, else the epochs' steps; None while a
    budget has yet to be planned."""
    t = train_config
    return t.planned_steps or t.max_steps or (None if budget_seconds(t) > 0 else t.epochs * steps_per_epoch)


@dataclass(frozen=True)
class Plan:
    """A budget's decisions, as train.planned_warmup, planned_steps and planned_at record them (0: not yet)."""
    warmup: int = 0
    steps: int = 0
    at: int = 0

    @classmethod
    def of(cls, train_config) -> Plan:
        return cls(train_config.planned_warmup, train_config.planned_steps, train_config.planned_at)

    def recorded_in(self, train_config):
        return dataclasses.replace(train_config, planned_warmup=self.warmup, planned_steps=self.steps,
                                   planned_at=self.at)


class TimeBudget:
    """The clock of a budgeted run and its decisions; `now` is time.perf_counter()'s, passed in by the caller.

    `spent`: the seconds earlier invocations used up to the checkpoint this one continues from. `step_factor`:
    1 + what the reports between steps cost, as a share of a step's time. `end_steps`: what the end's report costs,
    in steps' time."""

    def __init__(self, train_config, spent: float = 0.0, step_factor: float = 1.0, end_steps: float = 0.0):
        self.seconds, self.spent = budget_seconds(train_config), spent
        self.timed_until = train_config.decay_from
        self.step_factor, self.end_steps = step_factor, end_steps
        self.start = self.last = None
        self.steps_here = 0  # the steps this invocation took
        self.window: list[float] = []  # the durations timed for the plan, in seconds
        self.recent: deque[float] = deque(maxlen=RECENT_STEPS)
        self.first: list[float] = []  # the untimed first steps': all there is to price the end with, in a short run

    def begin(self, now: float) -> None:
        self.start = self.last = now

    def elapsed(self, now: float) -> float:
        """The budget's seconds spent at `now`, this invocation's and those before the checkpoint it resumed."""
        return self.spent + (now - self.start if self.start is not None else 0.0)

    def after_step(self, now: float) -> None:
        """Time a step that ended at `now`."""
        self.steps_here += 1
        duration, self.last = now - self.last, now
        if self.steps_here <= WARMUP_STEPS:
            self.first.append(duration)
            return
        self.recent.append(duration)
        if self.elapsed(now) >= TIMED_FROM * self.seconds:
            self.window.append(duration)

    def seconds_per_step(self, durations) -> float:
        return statistics.median(durations) * self.step_factor

    def steps_that_fit(self, now: float, durations) -> int:
        """How many more steps end the run, its last report included, at MARGIN of the budget."""
        per_step = self.seconds_per_step(durations)
        return math.floor((MARGIN * self.seconds - self.elapsed(now)) / per_step - self.end_steps)

    def decide(self, step: int, plan: Plan, warmup_steps: int, now: float) -> Plan | None:
        """The plan after `step` steps, if it changes: the warm-up fitted, the steps planned, or re-planned."""
        if not plan.steps:
            return self._first_plan(step, plan, warmup_steps, now)
        if len(self.recent) < PACE_STEPS:
            return None
        per_step = self.seconds_per_step(self.recent)
        projected_end = self.elapsed(now) + (plan.steps - step + self.end_steps) * per_step
        if self.seconds - self.slack(EARLY) <= projected_end <= self.seconds + self.slack(LATE):
            return None
        steps = step + max(1, self.steps_that_fit(now, self.recent))
        new = plan if steps == plan.steps else replanned(plan, step, steps, plan.warmup or warmup_steps)
        if new == plan:
            return None
        self.recent.clear()
        return new

    def _first_plan(self, step: int, plan: Plan, warmup_steps: int, now: float) -> Plan | None:
        if len(self.window) < MIN_TIMED_STEPS:
            return None
        total = step + max(1, self.steps_that_fit(now, self.window))
        new = plan
        if not plan.warmup and step < warmup_steps and warmup_steps > WARMUP_SHARE * total:
            new = dataclasses.replace(new, warmup=max(step, math.floor(WARMUP_SHARE * total)))
        # The decay's share of the budget is of what is left once the last report is priced in.
        end = self.end_steps * self.seconds_per_step(self.window)
        if self.elapsed(now) >= self.timed_until * (self.seconds - end):
            new = dataclasses.replace(new, steps=total, at=step)
            self.recent.clear()
            if (new.warmup or warmup_steps) > step:  # the speed was misjudged: the warm-up ends at the plan
                new = dataclasses.replace(new, warmup=step)
        return None if new == plan else new

    def slack(self, share: float) -> float:
        return max(share * self.seconds, MIN_SLACK)

    def spent_all(self, now: float, planned: bool) -> bool:
        """Whether the run must end now to end within its budget, its last report included (a planned run, whose
        pace is watched, gets its slack)."""
        durations = self.recent or self.window or self.first
        per_step = self.seconds_per_step(durations) if durations else 0.0
        limit = self.seconds + (self.slack(LATE) if planned else 0.0)
        return self.elapsed(now) + self.end_steps * per_step >= limit


def replanned(plan: Plan, step: int, steps: int, warmup: int) -> Plan:
    """The plan of `steps` steps made at `step`, its decay moved so that it has gone as far as it had: a cosine
    decay over [at, end], end the last step, at progress p = (step - at) / (end - at) keeps p if
    at' = (step - p end') / (1 - p). Where `step` is the new plan's last, the decay ends on it; where it was the old
    plan's last, the decay has ended and the run ends as planned (a longer plan would raise the rate again)."""
    start, end, new_end = max(warmup, plan.at), plan.steps - 1, steps - 1
    progress = min(1.0, max(0.0, (step - start) / max(1, end - start)))
    if progress == 1 and new_end > step:
        return plan
    at = round((step - progress * new_end) / (1 - progress)) if new_end > step else min(plan.at, step - 1)
    return dataclasses.replace(plan, steps=steps, at=min(step, max(warmup, at)))


def plan_news(old: Plan, new: Plan, step: int, seconds: float) -> list[str]:
    """What a run says of its budget's new plan."""
    news = []
    if new.warmup != old.warmup:
        news.append(f"the learning-rate warm-up shortened to {new.warmup} steps to fit the time budget")
    if new.steps and not old.steps:
        news.append(f"planned {new.steps} steps at step {step} to end within the time budget of {seconds:g} s")
    elif new.steps != old.steps:
        news.append(f"re-planned to {new.steps} steps (was {old.steps}) at step {step}: the pace changed")
    return news


def ending(train_config, step: int, out_of_time: bool, spent: float) -> str | None:
    """Which limit ended a run with a time budget: the budget, or the steps it planned (or train.max_steps)."""
    t, seconds = train_config, budget_seconds(train_config)
    if out_of_time:
        limit = (f"train.max_steps ({t.max_steps:,})" if t.max_steps else
                 f"its plan ({t.planned_steps:,} steps)" if t.planned_steps else "its steps could be timed")
        return (f"the time budget of {seconds:g} s ended the run at step {step:,}, before {limit}; a resume has no "
                "time left: give it a larger --train.minutes to train further")
    if seconds:
        steps = "planned steps" if t.planned_steps else "steps (train.max_steps)"
        return f"the run took its {step:,} {steps} in {spent:.1f} s of its {seconds:g} s time budget"
    return None
