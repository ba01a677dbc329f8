"""EDM's preconditioning (Karras et al. 2022, sec. 5 and table 1): the network's output F is scaled so that
both its input-output map and its training target have unit variance at every noise level.

In EDM's variables x = x_t / alpha = x0 + s n, with s = sigma / alpha, the denoised image is
D = c_skip(s) x + c_out(s) F, where c_skip = sd^2 / (s^2 + sd^2) and c_out = s sd / sqrt(s^2 + sd^2), and sd is
the data's standard deviation. The network's input is x_t = x / sqrt(1 + s^2), EDM's c_in for sd = 1. With sd = 1
this is the v objective up to sign; EDM's sd = 0.5 shifts the balance toward predicting x0.
Trained with loss weighting "none", the squared error on F is EDM's loss, lambda(s) c_out^2 = 1 (eq. 8).
"""

from .base import Objective

SIGMA_DATA = 0.5  # Karras et al. 2022, table 1


class EDM(Objective):
    name = "edm"
    defined_at_zero_snr = False  # x = x_t / alpha is undefined at alpha = 0

    @staticmethod
    def _scalings(alpha, sigma):
        s = sigma / alpha
        total = s**2 + SIGMA_DATA**2
        return SIGMA_DATA**2 / total, s * SIGMA_DATA / total**0.5  # c_skip, c_out

    def target(self, x0, eps, alpha, sigma):
        c_skip, c_out = self._scalings(alpha, sigma)
        x = x0 + (sigma / alpha) * eps
        return (x0 - c_skip * x) / c_out

    def eps_and_x0(self, output, x_t, alpha, sigma):
        c_skip, c_out = self._scalings(alpha, sigma)
        x0 = c_skip * (x_t / alpha) + c_out * output
        return (x_t - alpha * x0) / sigma, x0

    def error_scale(self, snr):
        return snr + 1 / SIGMA_DATA**2  # 1 / c_out^2 with s^2 = 1 / SNR
