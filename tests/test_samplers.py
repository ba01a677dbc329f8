"""Samplers: exact against an analytic denoiser, step-for-step against diffusers, guidance limits."""

import math

import pytest
import torch
from conftest import gaussian_denoiser
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from tinydiffusion.config import DiffusionConfig
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.samplers import SAMPLERS, karras_sigmas, network_evaluations
from tinydiffusion.samplers.denoiser import Denoiser

DATA_MEAN, DATA_STD = 0.3, 0.25  # gaussian_denoiser's defaults


def run_gaussian(name, steps, schedule, seed=0):
    diffusion = GaussianDiffusion(DiffusionConfig(schedule=schedule))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(4000, 1, 2, 2, generator=generator, dtype=torch.float64)
    denoise = gaussian_denoiser()
    options = {"clip_x0": False} if name == "ddpm" else {}
    x0 = SAMPLERS[name](denoise, noise, diffusion, steps, generator=generator, **options)
    assert len(denoise.calls) == network_evaluations(name, steps)
    return x0


# Step counts at which each sampler's discretisation error is below the sampling error of 16,000
# draws on this narrow (std 0.25) distribution; fewer steps shrink (Euler, DDIM) or widen (Heun) it.
@pytest.mark.parametrize("name,steps", [
    ("ddpm", 1000), ("ddpm", 250), ("ddim", 100), ("dpmpp-2m", 50), ("euler", 200), ("heun", 30),
])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_every_sampler_reproduces_a_gaussian(name, steps, schedule):
    x0 = run_gaussian(name, steps, schedule)
    assert x0.mean().item() == pytest.approx(DATA_MEAN, abs=0.015)
    assert x0.std().item() == pytest.approx(DATA_STD, abs=0.015)


@pytest.mark.parametrize("name", [name for name, sampler in SAMPLERS.items() if sampler.deterministic])
def test_deterministic_samplers_converge_with_more_steps(name):
    errors = [abs(run_gaussian(name, steps, "cosine").std().item() - DATA_STD) for steps in (5, 20, 80)]
    assert errors[2] < errors[1] < errors[0]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_last_step_reaches_t_zero(name):
    """The known bug class: a loop that stops one step early returns a noisy image.

    With a denoiser that always predicts x0 = 0.5 exactly, the output must be exactly 0.5.
    """
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine"))

    def constant(x_t, t, alpha, sigma):
        x0 = torch.full_like(x_t, 0.5)
        return (x_t - alpha * x0) / sigma, x0

    recorded = []
    x = SAMPLERS[name](constant, torch.randn(3, 1, 4, 4, dtype=torch.float64), diffusion, 10,
                       callback=lambda i, t, x, x0: recorded.append((i, t)))
    torch.testing.assert_close(x, torch.full_like(x, 0.5), atol=1e-6, rtol=0)
    assert recorded[-1][0] == 9


def fake_eps(x, t):
    """A smooth, t-dependent stand-in for a trained network's eps prediction."""
    return 0.6 * x + 0.1 * torch.sin(torch.as_tensor(t, dtype=x.dtype) / 100.0 + x)


def eps_denoiser():
    def denoise(x_t, t, alpha, sigma):
        eps = fake_eps(x_t, t)
        return eps, (x_t - sigma * eps) / alpha

    return denoise


# diffusers' DDIM steps to t - T // steps, which equals our next visited step where spacing is uniform.
@pytest.mark.parametrize("spacing,steps", [("trailing", 10), ("trailing", 50), ("leading", 20), ("leading", 7)])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(spacing, steps, eta):
    ours = GaussianDiffusion(DiffusionConfig(schedule="linear"))
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
                              timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    x_ref = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    x = x_ref.clone()
    gen_ref = torch.Generator().manual_seed(1)
    for t in scheduler.timesteps:
        x_ref = scheduler.step(fake_eps(x_ref, int(t)), t, x_ref, eta=eta, generator=gen_ref).prev_sample
    out = SAMPLERS["ddim"](eps_denoiser(), x, ours, steps, eta=eta, spacing=spacing,
                           generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x_ref, atol=1e-4, rtol=1e-4)


def test_ddpm_matches_diffusers_with_the_same_noise():
    ours = GaussianDiffusion(DiffusionConfig(schedule="cosine", timesteps=100))
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              variance_type="fixed_small")
    scheduler.set_timesteps(100)
    x_ref = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    x = x_ref.clone()
    gen_ref = torch.Generator().manual_seed(2)
    for t in scheduler.timesteps:
        x_ref = scheduler.step(fake_eps(x_ref, int(t)), t, x_ref, generator=gen_ref).prev_sample
    out = SAMPLERS["ddpm"](eps_denoiser(), x, ours, 100, clip_x0=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, x_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_dpmpp_2m_matches_diffusers(steps):
    ours = GaussianDiffusion(DiffusionConfig(schedule="cosine"))
    scheduler = DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++",
                                            solver_order=2, timestep_spacing="trailing", final_sigmas_type="zero",
                                            lower_order_final=True)
    scheduler.set_timesteps(steps)
    x_ref = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    x = x_ref.clone()
    for t in scheduler.timesteps:
        x_ref = scheduler.step(fake_eps(x_ref, int(t)), t, x_ref).prev_sample
    out = SAMPLERS["dpmpp-2m"](eps_denoiser(), x, ours, steps)
    torch.testing.assert_close(out, x_ref, atol=1e-4, rtol=1e-4)


def test_karras_sigmas_endpoints():
    sigmas = karras_sigmas(0.01, 80.0, 10)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-2] == pytest.approx(0.01) and sigmas[-1] == 0.0
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))


class TwoHeadedNet(torch.nn.Module):
    """Outputs 1 for class 0, 3 for the 'no class' index: easy to see what guidance mixes."""

    def forward(self, x, t, y):
        return torch.where((y == 2)[:, None, None, None], 3.0, 1.0).expand_as(x).clone()


@pytest.mark.parametrize("scale,expected", [(1.0, 1.0), (0.0, 3.0), (2.0, -1.0)])
def test_guidance_scale_limits(scale, expected):
    diffusion = GaussianDiffusion(DiffusionConfig(objective="eps"))
    denoise = Denoiser(TwoHeadedNet(), diffusion, y=torch.zeros(4, dtype=torch.long), guidance=scale, null_class=2)
    eps, _ = denoise(torch.zeros(4, 1, 2, 2), 10, math.sqrt(0.5), math.sqrt(0.5))
    torch.testing.assert_close(eps, torch.full_like(eps, expected))


def test_every_sampler_starts_from_a_zero_terminal_snr_step():
    """At SNR 0 the first step has alpha = 0: DPM-Solver++'s lambda is -inf there (it was a math domain
    error), and its update from pure noise must be DDIM's."""
    import torch as th

    from tinydiffusion.config import DiffusionConfig
    from tinydiffusion.diffusion import GaussianDiffusion
    from tinydiffusion.samplers import SAMPLERS
    from tinydiffusion.samplers.denoiser import Denoiser

    diffusion = GaussianDiffusion(DiffusionConfig(objective="v", zero_terminal_snr=True, timesteps=100))
    assert float(diffusion.alphas_cumprod[-1]) == 0.0

    def net(x, t, y=None):  # any smooth function of x and t
        return 0.3 * x + 0.01 * t.view(-1, 1, 1, 1)

    noise = th.randn(2, 1, 8, 8, generator=th.Generator().manual_seed(0))
    first_steps = {}
    for name, sample in SAMPLERS.items():
        steps = []
        out = sample(Denoiser(net, diffusion), noise.clone(), diffusion, 4, generator=th.Generator().manual_seed(1),
                     callback=lambda i, t, x, x0, steps=steps: steps.append(x.clone()))
        assert th.isfinite(out).all(), name
        first_steps[name] = steps[0]
    th.testing.assert_close(first_steps["dpmpp-2m"], first_steps["ddim"])


def test_samplers_declare_their_options_and_others_are_refused():
    from tinydiffusion.errors import UserError
    from tinydiffusion.samplers import check_sampler_options, sampler_options

    assert sampler_options("ddim") == {"eta": 0.0, "spacing": "trailing", "clip_x0": False}
    assert sampler_options("heun") == {"rho": 7.0, "sigma_max": 80.0}
    check_sampler_options("ddim", {"eta": 0.5, "spacing": "leading"})
    cases = {("euler", "eta"): "--eta applies to the ddim sampler only.",
             ("heun", "spacing"): "--spacing applies to the ddpm, ddim, dpmpp-2m, consistency samplers only.",
             ("ddim", "rho"): "--rho applies to the euler, heun samplers only.",
             ("ddim", "warp"): "--warp applies to no sampler."}
    for (sampler, option), sentence in cases.items():
        with pytest.raises(UserError) as caught:
            check_sampler_options(sampler, {option: 1})
        assert str(caught.value) == sentence
