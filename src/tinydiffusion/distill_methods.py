"""The distillation methods `distill.method` names, as plain values with no torch behind them: what a config's
checks, sampling and the exports need to know of a student (training/distillation.py trains them)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class DistillMethod:
    """A distillation method: where each stretch of the teacher's path ends, how the student's x0 error is weighted,
    and the sampler the student samples with (recorded as distill.sampler)."""
    student_sampler: str
    to_clean: bool  # from every teacher level to the clean image (the student then takes any number of steps)
    snr_weighted: bool  # the x0 error weighted by 1 + SNR
    removed: bool = False  # no longer trained (check_trainable); its students still load and sample


# Adding a method is an entry here (and its target, if it is new, in training/distillation.py's Distillation).
DISTILL_METHODS = {
    "trajectory": DistillMethod("ddim", to_clean=False, snr_weighted=True),
    "consistency": DistillMethod("consistency", to_clean=True, snr_weighted=False),
    # Distribution matching (DMD, Yin et al. 2024), removed after 0.1.0 (issue 47): it made the students it
    # fine-tuned worse at every checkpoint (docs/reports/distillation.md). Its students are fine-tuned trajectory
    # students, so they still load and sample, with DDIM at their own steps.
    "dmd": DistillMethod("ddim", to_clean=False, snr_weighted=False, removed=True),
}


def check_trainable(method: str) -> None:
    """Refuse, in one sentence, to train a student of a removed method: a new one or a resumed one."""
    if method in DISTILL_METHODS and DISTILL_METHODS[method].removed:
        raise UserError(f"the {method} distillation method was removed from tinydiffusion, as it made its students "
                        "worse (docs/reports/distillation.md); its students still load and sample, and "
                        "--distill.method trajectory distils instead (with --distill.init to start from one).")
