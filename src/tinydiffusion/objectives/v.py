"""Predict v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4): well scaled at every noise level."""

from .base import Objective


class V(Objective):
    name = "v"

    def target(self, x0, eps, alpha, sigma):
        return alpha * eps - sigma * x0

    def eps_and_x0(self, output, x_t, alpha, sigma):
        # With alpha^2 + sigma^2 = 1: x0 = alpha x_t - sigma v and eps = sigma x_t + alpha v.
        return sigma * x_t + alpha * output, alpha * x_t - sigma * output

    def error_scale(self, snr):
        return snr + 1  # ||v - v'||^2 = (SNR + 1) ||x0 - x0'||^2
