"""Predict the clean image itself."""

from .base import Objective


class X0(Objective):
    name = "x0"

    def target(self, x0, eps, alpha, sigma):
        return x0

    def eps_and_x0(self, output, x_t, alpha, sigma):
        return (x_t - alpha * output) / sigma, output

    def error_scale(self, snr):
        return 1.0
