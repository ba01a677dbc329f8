"""Schedules and the forward process, checked against diffusers' independent implementation."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydiffusion.config import DiffusionConfig, RunConfig
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.errors import UserError
from tinydiffusion.schedules import cosine_betas, linear_betas, make_betas, timestep_spacing


@pytest.mark.parametrize("ours,theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_alphas_cumprod_match_diffusers(ours, theirs):
    diffusion = GaussianDiffusion(DiffusionConfig(schedule=ours, timesteps=1000))
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs).alphas_cumprod.double()
    assert diffusion.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(diffusion.alphas_cumprod, reference, atol=2e-6, rtol=1e-5)


def test_zero_terminal_snr_matches_diffusers():
    config = DiffusionConfig(schedule="linear", zero_terminal_snr=True, objective="v")
    ours = GaussianDiffusion(config).alphas_cumprod
    theirs = DDPMScheduler(beta_schedule="linear", rescale_betas_zero_snr=True).alphas_cumprod.double()
    assert ours[-1] == 0.0
    torch.testing.assert_close(ours[:-1], theirs[:-1], atol=1e-5, rtol=1e-4)


def test_schedule_endpoints():
    linear = linear_betas(1000)
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    cosine = cosine_betas(1000)
    assert cosine.max().item() <= 0.999 and cosine.min().item() > 0
    ab = torch.cumprod(1 - cosine, 0)
    assert ab[0].item() > 0.9999 and ab[-1].item() < 1e-4  # starts clean, ends (nearly) pure noise
    assert torch.all(ab[1:] < ab[:-1])  # noise only ever grows


@settings(max_examples=25, deadline=None)
@given(schedule=st.sampled_from(["linear", "cosine"]), shift=st.floats(-10, 10).filter(lambda x: abs(x) > 1e-3))
def test_logsnr_shift_moves_every_steps_log_snr_by_the_shift(schedule, shift):
    plain = GaussianDiffusion(DiffusionConfig(schedule=schedule)).alphas_cumprod
    shifted = GaussianDiffusion(DiffusionConfig(schedule=schedule, logsnr_shift=shift)).alphas_cumprod
    logsnr = lambda ab: torch.log(ab) - torch.log1p(-ab)  # noqa: E731
    keep = (plain > 1e-12) & (plain < 1 - 1e-12)  # where float64 still holds both sides of the logit
    torch.testing.assert_close(logsnr(shifted)[keep] - logsnr(plain)[keep],
                               torch.full_like(plain[keep], shift), atol=1e-6, rtol=0)
    assert torch.all(shifted[1:] <= shifted[:-1])  # still a forward process: noise never shrinks


def test_a_negative_shift_is_noisier_and_keeps_zero_terminal_snr():
    plain = GaussianDiffusion(DiffusionConfig(objective="v")).alphas_cumprod
    noisier = GaussianDiffusion(DiffusionConfig(objective="v", logsnr_shift=-2 * math.log(2))).alphas_cumprod
    assert torch.all(noisier < plain)
    # Hoogeboom et al.'s reading: at twice the size, a 2x2 block's mean has 4x the SNR of a pixel
    torch.testing.assert_close(noisier / (1 - noisier), plain / (1 - plain) / 4)
    terminal = GaussianDiffusion(DiffusionConfig(objective="v", logsnr_shift=-1.4, zero_terminal_snr=True))
    assert terminal.alphas_cumprod[-1] == 0.0 and terminal.alphas_cumprod[0] > 0.99


@pytest.mark.parametrize("shift", [float("nan"), 10.5, -11.0, float("inf")])
def test_logsnr_shift_out_of_bounds_is_refused(shift):
    config = RunConfig()
    config.diffusion.logsnr_shift = shift
    with pytest.raises(UserError, match="logsnr_shift"):
        config.validate()


def test_schedules_are_float64():
    for schedule in ("linear", "cosine"):
        assert make_betas(DiffusionConfig(schedule=schedule)).dtype == torch.float64


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 10, 50, 333])
def test_timestep_spacing_matches_diffusers(spacing, steps):
    scheduler = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    assert timestep_spacing(1000, steps, spacing) == scheduler.timesteps.tolist()


def test_trailing_spacing_starts_at_the_noisiest_step_and_reaches_zero():
    for steps in (1, 7, 20, 1000):
        ts = timestep_spacing(1000, steps, "trailing")
        assert ts[0] == 999 and len(ts) == steps and ts == sorted(ts, reverse=True)
    assert timestep_spacing(1000, 1000, "trailing")[-1] == 0


def test_q_sample_statistics():
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="linear"))
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 2, 2), 0.5)
    for step in (0, 250, 999):
        t = diffusion.step_time(torch.full((x0.shape[0],), step))
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=generator))
        ab = diffusion.alphas_cumprod[step].item()
        assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.5, abs=0.01)
        assert x_t.var().item() == pytest.approx(1 - ab, abs=0.01 + 0.02 * (1 - ab))


def test_q_sample_is_closed_form_of_the_markov_chain():
    """Noising step by step with beta_t equals one call of q_sample, in distribution (mean and variance)."""
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine", timesteps=50))
    generator = torch.Generator().manual_seed(1)
    x = torch.full((40000,), 0.8, dtype=torch.float64)
    for beta in diffusion.betas:
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    ab = diffusion.alphas_cumprod[-1].item()
    assert x.mean().item() == pytest.approx(math.sqrt(ab) * 0.8, abs=0.01)
    assert x.var().item() == pytest.approx(1 - ab, abs=0.02)
