"""Predict the noise (Ho et al. 2020, eq. 14)."""

from .base import Objective


class Eps(Objective):
    name = "eps"
    defined_at_zero_snr = False  # x0 = (x_t - sigma eps) / alpha is undefined at alpha = 0

    def target(self, x0, eps, alpha, sigma):
        return eps

    def eps_and_x0(self, output, x_t, alpha, sigma):
        return output, (x_t - sigma * output) / alpha  # Ho et al. 2020, eq. 15

    def error_scale(self, snr):
        return snr.clamp(min=1e-8)  # x0 - x0' = (sigma / alpha) (eps' - eps)
