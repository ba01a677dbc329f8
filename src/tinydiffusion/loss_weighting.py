"""How the training loss weights each image's squared error by its noise level (diffusion.loss_weighting): one
function of the SNR and the process each, joined in LOSS_WEIGHTINGS. Adding a weighting means one function and one
line; config.py reads LOSS_WEIGHTINGS for the field's help and checks. Tensor methods only, so no torch import."""

from __future__ import annotations

from .fields import Choice


def unweighted(snr, diffusion):
    """Every image's error counts alike: the objective's plain mean squared error."""
    return snr.new_ones(snr.shape)


def min_snr(snr, diffusion):
    """Min-SNR-gamma (Hang et al. 2023, eq. 11 and sec. 3.4). The paper's weight on the x_0 error is min(SNR, gamma).
    Each objective's squared error is a rescaled x_0 error (||eps - eps'||^2 = SNR ||x0 - x0'||^2, for one), so its
    weight is min(SNR, gamma) divided by that scale, which the objective gives."""
    return snr.clamp(max=diffusion.config.min_snr_gamma) / diffusion.objective.error_scale(snr)


LOSS_WEIGHTINGS: dict[str, Choice] = {
    "none": Choice(unweighted, "every noise level alike"),
    "min-snr": Choice(min_snr, "Hang et al. 2023"),
}
