"""What sampling does when it is not told: the one set of defaults `generate()` and the command line share.

Plain values with no torch behind them, so the command line can show them in `--help` without importing it.
A sampler's own default steps and options are its registry entry's (samplers.SAMPLERS), a run's own fields and
their defaults config.py's, named recipes presets.py's, and bounds bounds.py's.
"""

DEFAULT_SAMPLER = "dpmpp-2m"

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
