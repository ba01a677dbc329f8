"""The process: parameterisation conversions, targets and the Min-SNR weights."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydiffusion.config import DiffusionConfig
from tinydiffusion.diffusion import GaussianDiffusion


def draws(seed=0, n=64):
    """Images, noise and discrete steps k (the process's times are step_time(k) = (k + 1) / T)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(n, 1, 4, 4, generator=g)
    k = torch.randint(0, 1000, (n,), generator=g)
    return x0, noise, k


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
@given(seed=st.integers(0, 10_000))
@settings(max_examples=10, deadline=None)
def test_perfect_prediction_recovers_eps_and_x0(objective, seed):
    diffusion = GaussianDiffusion(DiffusionConfig(objective=objective))
    x0, noise, k = draws(seed)
    t = diffusion.step_time(k.clamp(5, 990))  # away from the ends, where eps <-> x0 conversions divide by ~0
    x_t = diffusion.q_sample(x0, t, noise)
    eps, x0_pred = diffusion.predict_eps_and_x0(diffusion.target(x0, noise, t), x_t, t)
    torch.testing.assert_close(eps, noise, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(x0_pred, x0, atol=2e-3, rtol=1e-3)


def test_v_target_definition():
    """Salimans & Ho 2022: v = alpha eps - sigma x0."""
    diffusion = GaussianDiffusion(DiffusionConfig(objective="v"))
    x0, noise, k = draws(1)
    t = diffusion.step_time(k)
    ab = diffusion.alphas_cumprod[k].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(diffusion.target(x0, noise, t), ab.sqrt() * noise - (1 - ab).sqrt() * x0)


@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_min_snr_weight_equals_clipped_snr_on_the_x0_error(objective):
    """Every objective's weighted loss equals min(SNR, gamma) * ||x0 - x0_pred||^2 (Hang et al. 2023).

    The known bug is using min(SNR, gamma) / SNR for v, which is the eps weight.
    """
    diffusion = GaussianDiffusion(DiffusionConfig(objective=objective, loss_weighting="min-snr", min_snr_gamma=5.0))
    x0, noise, k = draws(2)
    t = diffusion.step_time(k)
    x_t = diffusion.q_sample(x0, t, noise)
    wrong_x0 = x0 + 0.1 * torch.randn_like(x0)
    # Build the network output that corresponds to predicting wrong_x0 at this x_t.
    alpha, sigma = diffusion.alpha_sigma(t, x0)
    implied_eps = (x_t - alpha * wrong_x0) / sigma
    output = {"eps": implied_eps, "x0": wrong_x0, "v": alpha * implied_eps - sigma * wrong_x0}[objective]
    weighted = diffusion.loss_weight(t, x0) * (output - diffusion.target(x0, noise, t)) ** 2
    snr = diffusion.alphas_cumprod[k] / (1 - diffusion.alphas_cumprod[k])
    expected = snr.clamp(max=5.0).float().view(-1, 1, 1, 1) * (wrong_x0 - x0) ** 2
    torch.testing.assert_close(weighted, expected, atol=1e-4, rtol=2e-3)


def test_no_weighting_is_plain_mse():
    diffusion = GaussianDiffusion(DiffusionConfig(objective="eps"))
    x0, noise, k = draws(3)
    t = diffusion.step_time(k)

    def net(x, tt, y):
        return torch.zeros_like(x)

    assert diffusion.training_loss(net, x0, t, noise).item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-5)
