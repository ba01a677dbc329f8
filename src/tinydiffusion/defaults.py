"""What sampling does when it is not told: the one set of defaults `generate()` and the command line share.

Plain values with no torch behind them, so the command line can show them in `--help` without importing it.
A run's own fields and their defaults are config.py's, named recipes presets.py's, and bounds bounds.py's.
"""

from typing import NamedTuple

from .schedules import TIMESTEP_SPACINGS

# Steps each sampler takes by default (None: all T steps of the model). A sampler registered in
# samplers.SAMPLERS has an entry here; the command line offers these names.
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpmpp-2m": 20, "euler": 50, "heun": 10, "consistency": 4}
DEFAULT_SAMPLER = "dpmpp-2m"


class SamplerFlag(NamedTuple):
    """A sampler option offered on the command line as --NAME: its type, its bounds (a number) or choices (text),
    what it does, and, as the samplers' signatures declare them, the samplers that take it and its default."""
    kind: type
    allowed: tuple
    help: str
    takers: tuple[str, ...]
    default: object


# The sampler options the command line offers (the others, such as clip_x0, rho and sigma_max, are keywords of
# generate() and the editing functions only). The samplers declare their options in their signatures
# (samplers.sampler_options); this copy, free of torch, lets `--help` answer at once, and tests/test_edges.py
# checks it against them, so it cannot drift. A new option becomes a flag with one entry here.
SAMPLER_FLAGS = {
    "eta": SamplerFlag(float, (0, 1), "the noise added at each step, from 0 (deterministic) to 1 (as DDPM)",
                       ("ddim",), 0.0),
    "spacing": SamplerFlag(str, TIMESTEP_SPACINGS, "which of the model's timesteps are visited",
                           ("ddpm", "ddim", "dpmpp-2m", "consistency"), "trailing"),
}

# The classifier-free guidance scale used when none is given, for class-conditional models: the
# scale with the lowest FD among those whose samples the classifier assigns to the requested class
# at least 90% of the time, measured on the bundled model (docs/defaults.md). Unconditional models
# use 1 (no guidance).
DEFAULT_GUIDANCE = 1.5

# The editing commands' built-in masks (editing/images.py draws them): the region to regenerate.
BUILTIN_MASKS = ("left", "top", "centre", "strokes")
MASK_ALIASES = {"center": "centre"}  # the US spelling is the same mask

# The student steps `tinydiffusion distill --steps` makes: each a trajectory level that lies on the teacher's
# default 20-step path (distill.teacher_steps, a multiple of each), as docs/distill.md measures them.
STUDENT_STEPS = (1, 2, 4)
