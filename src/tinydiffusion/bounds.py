"""Bounds on what a user may ask for, each defined once: the config, the command line, the pipeline and the demo
check against these. Plain values with no torch behind them, so the command line's help stays fast.

A config.json and every option are untrusted input: these keep an absurd value from becoming an allocation of
terabytes or a loop of 10^30 steps.
"""

MAX_SEED = 2**63 - 1  # a sampling seed: torch.Generator.manual_seed takes 64-bit integers
MAX_TRAIN_SEED = 2**32 - 1  # training's seed: epoch_order mixes it into a 64-bit generator seed
MAX_GUIDANCE = 100.0  # a classifier-free guidance scale
MAX_TIMESTEPS = 100_000  # T, and so the most sampling steps any model takes
MAX_LOGSNR_SHIFT = 10.0  # a shift of the schedule's log-SNR: an SNR e^10 times higher or lower is far past any use
MAX_OPTIMIZER_STEPS = 10**12  # a training run's optimizer steps (and epochs, and step intervals)

# A public demo bounds the work of one visitor's request more tightly.
MAX_REQUEST_SAMPLING_STEPS = 250
MAX_REQUEST_GUIDANCE = 10.0
