"""The interface of an objective. Notation: x_t = alpha x0 + sigma eps with alpha^2 + sigma^2 = 1; alpha and
sigma are floats or tensors broadcasting against x. Only tensor arithmetic, so no torch import is needed."""

from __future__ import annotations


class Objective:
    name = ""
    defined_at_zero_snr = True  # can the output still give x0 where alpha = 0 (x_T is pure noise)?

    def target(self, x0, eps, alpha, sigma):
        """What the network is trained to output for x_t = alpha x0 + sigma eps."""
        raise NotImplementedError

    def eps_and_x0(self, output, x_t, alpha, sigma):
        """The network's output turned into the (eps, x0) predictions the samplers use."""
        raise NotImplementedError

    def error_scale(self, snr):
        """||output error||^2 / ||x0 error||^2 at a signal-to-noise ratio alpha^2 / sigma^2."""
        raise NotImplementedError
