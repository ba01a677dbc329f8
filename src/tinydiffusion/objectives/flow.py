"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2022): predict the velocity u = eps - x0.

On the straight path x_tau = (1 - tau) x0 + tau eps, u = dx_tau / dtau. Any (alpha, sigma) is a point of that
path scaled by 1 / (alpha + sigma): tau = sigma / (alpha + sigma) and x_tau = x_t / (alpha + sigma). So the
objective works on every schedule, and on the rectified-flow schedule (schedules.py) it is exactly flow
matching. x0 and eps follow from x_t and u with no division by alpha, so it is defined at SNR 0.
"""

from .base import Objective


class Flow(Objective):
    name = "flow"

    def target(self, x0, eps, alpha, sigma):
        return eps - x0

    def eps_and_x0(self, output, x_t, alpha, sigma):
        scale = alpha + sigma
        return (x_t + alpha * output) / scale, (x_t - sigma * output) / scale

    def error_scale(self, snr):
        return (snr.sqrt() + 1) ** 2  # x0 - x0' = sigma (u' - u) / (alpha + sigma)
