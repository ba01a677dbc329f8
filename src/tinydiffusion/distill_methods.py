"""The distillation methods `distill.method` names, as plain values with no torch behind them: what a config's
checks, sampling and the exports need to know of a student (training/distillation.py trains them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DistillMethod:
    """A distillation method: where each stretch of the teacher's path ends, how the student's x0 error is weighted,
    and the sampler the student samples with (recorded as distill.sampler)."""
    student_sampler: str
    to_clean: bool  # from every teacher level to the clean image (the student then takes any number of steps)
    snr_weighted: bool  # the x0 error weighted by 1 + SNR
    matches_distribution: bool = False  # no teacher paths: distribution_matching.py's task instead of Distillation


# Adding a method is an entry here (and its target, if it is new, in training/distillation.py's Distillation).
DISTILL_METHODS = {
    "trajectory": DistillMethod("ddim", to_clean=False, snr_weighted=True),
    "consistency": DistillMethod("consistency", to_clean=True, snr_weighted=False),
    "dmd": DistillMethod("ddim", to_clean=False, snr_weighted=False, matches_distribution=True),
}
