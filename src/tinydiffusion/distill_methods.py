"""The distillation methods `distill.method` names, as plain values with no torch behind them: what a config's
checks, sampling and the exports need to know of a student (training/distillation.py trains them)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class DistillMethod:
    """A distillation method: the sampler its students sample with (recorded as distill.sampler), and whether they
    take any number of steps."""
    student_sampler: str
    to_clean: bool  # trained from every teacher level to the clean image: the student takes any number of steps
    removed: str = ""  # why it is no longer trained (check_trainable); its students still load and sample


# Adding a method is an entry here and its target in training/distillation.py's Distillation, which trains the
# trajectory method's only.
DISTILL_METHODS = {
    "trajectory": DistillMethod("ddim", to_clean=False),
    # Consistency distillation, removed after 0.1.0 (issue 47): at equal training time its students sampled worse
    # than trajectory students at 2 and 4 steps (docs/reports/distillation.md). Its students still load and sample,
    # with multistep consistency sampling (samplers/consistency.py) at any number of steps.
    "consistency": DistillMethod("consistency", to_clean=True,
                                 removed="its students sampled worse than trajectory students at equal training time"),
    # Distribution matching (DMD, Yin et al. 2024), removed after 0.1.0 (issue 47): it made the students it
    # fine-tuned worse at every checkpoint (docs/reports/distillation.md). Its students are fine-tuned trajectory
    # students, so they still load and sample, with DDIM at their own steps.
    "dmd": DistillMethod("ddim", to_clean=False, removed="it made its students worse"),
}


def check_trainable(method: str) -> None:
    """Refuse, in one sentence, to train a student of a removed method: a new one or a resumed one."""
    if method in DISTILL_METHODS and DISTILL_METHODS[method].removed:
        raise UserError(f"the {method} distillation method was removed from tinydiffusion, as "
                        f"{DISTILL_METHODS[method].removed} (docs/reports/distillation.md); its students still load "
                        "and sample, and --distill.method trajectory distils instead (with --distill.init to start "
                        "from one).")
