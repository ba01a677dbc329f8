"""What the network predicts: one small class per objective (Karras et al. 2022 keep each loss a class too).

Each says what the network is trained to output at a noise level (alpha, sigma), how that output becomes
the denoised estimate (eps, x0) that every sampler uses, and how its squared error scales the error in x0,
which the Min-SNR weights need. Adding an objective means one file here and one line in OBJECTIVES.
"""

from .base import Objective
from .edm import EDM
from .eps import Eps
from .flow import Flow
from .v import V
from .x0 import X0

OBJECTIVES: dict[str, type[Objective]] = {"eps": Eps, "x0": X0, "v": V, "flow": Flow, "edm": EDM}

__all__ = ["OBJECTIVES", "Objective"]
