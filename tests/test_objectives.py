"""Objectives as small classes: each one's target, its denoised estimate, its Min-SNR error scale, and flow
matching trained and sampled with every sampler through the same seam."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import cli, smoke_config
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydiffusion.config import DiffusionConfig, apply_overrides
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.objectives import OBJECTIVES, Objective
from tinydiffusion.samplers import SAMPLERS
from tinydiffusion.training import train


def _point(alpha: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, 1, 6, 6, generator=generator, dtype=torch.float64) * 2 - 1
    eps = torch.randn(3, 1, 6, 6, generator=generator, dtype=torch.float64)
    sigma = math.sqrt(1 - alpha**2)
    return x0, eps, alpha * x0 + sigma * eps, sigma


@pytest.mark.parametrize("name", list(OBJECTIVES))
@given(alpha=st.floats(0.0, 0.999), seed=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_the_target_gives_back_the_clean_image_and_the_noise(name, alpha, seed):
    objective = OBJECTIVES[name]()
    if alpha < 1e-3 and not objective.defined_at_zero_snr:
        return
    x0, eps, x_t, sigma = _point(alpha, seed)
    eps_hat, x0_hat = objective.eps_and_x0(objective.target(x0, eps, alpha, sigma), x_t, alpha, sigma)
    torch.testing.assert_close(x0_hat, x0, atol=1e-7 / max(alpha, 1e-3), rtol=1e-7)
    torch.testing.assert_close(eps_hat, eps, atol=1e-7 / max(sigma, 1e-3), rtol=1e-7)


@pytest.mark.parametrize("name", list(OBJECTIVES))
@pytest.mark.parametrize("alpha", [0.05, 0.5, 0.9, 0.995])
def test_error_scale_is_the_ratio_of_output_error_to_x0_error(name, alpha):
    """What the Min-SNR weights rest on: a change d in the output moves x0 by exactly error_scale^-1/2 |d|."""
    objective = OBJECTIVES[name]()
    x0, eps, x_t, sigma = _point(alpha, 0)
    output = objective.target(x0, eps, alpha, sigma)
    change = torch.randn(output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, moved = objective.eps_and_x0(output + change, x_t, alpha, sigma)
    ratio = change.square().sum() / (moved - x0).square().sum()
    snr = torch.tensor(alpha**2 / sigma**2, dtype=torch.float64)
    assert float(ratio) == pytest.approx(float(torch.as_tensor(objective.error_scale(snr))), rel=1e-9)


def test_uniform_times_are_drawn_as_before_and_logit_normal_favours_the_middle():
    uniform = GaussianDiffusion(DiffusionConfig())
    drawn = uniform.draw_times(10_000, torch.Generator().manual_seed(3), "cpu")
    steps = torch.randint(0, 1000, (10_000,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, (steps + 1).double() / 1000)  # step k at t = (k + 1) / T
    assert torch.equal(uniform.network_time(drawn), steps.float())  # the network sees the same steps as ever
    logit = GaussianDiffusion(DiffusionConfig(timestep_sampling="logit-normal"))
    middle = logit.draw_times(10_000, torch.Generator().manual_seed(3), "cpu")
    assert 0 < float(middle.min()) and float(middle.max()) <= 1
    in_middle = lambda t: float(((t > 0.25) & (t <= 0.75)).float().mean())  # noqa: E731
    assert in_middle(middle) > 0.6 > in_middle(drawn)  # logit-normal(0, 1): 73% in the middle half; uniform 50%


def test_log_normal_times_follow_edm_noise_levels():
    """EDM's draw: log(sigma / alpha) ~ N(-1.2, 1.2^2) (Karras et al. 2022, table 1), mapped to times between
    the steps; alpha(t) and sigma(t) there give back the drawn level."""
    diffusion = GaussianDiffusion(DiffusionConfig(timestep_sampling="log-normal"))
    t = diffusion.draw_times(20_000, torch.Generator().manual_seed(4), "cpu")
    alpha, sigma = diffusion.alpha_sigma(t, torch.zeros(len(t)))
    log_noise = (sigma.double() / alpha.double()).log()
    lowest, highest = diffusion.noise_range()
    inside = (log_noise > math.log(lowest) + 1e-3) & (log_noise < math.log(highest) - 1e-3)
    assert float(inside.double().mean()) > 0.99  # the cosine schedule spans this whole distribution but its tails
    assert float(log_noise[inside].mean()) == pytest.approx(-1.2, abs=0.05)
    assert float(log_noise[inside].std()) == pytest.approx(1.2, abs=0.05)
    assert not torch.equal(diffusion.network_time(t), diffusion.network_time(t).round())  # off the grid


def test_an_objective_is_one_class_and_one_registration(tiny_data_dir, tmp_path, monkeypatch):
    """A new objective (here x0 scaled by 2) needs its class and its line in OBJECTIVES, and nothing else."""

    class TwiceX0(Objective):
        name = "twice-x0"

        def target(self, x0, eps, alpha, sigma):
            return 2 * x0

        def eps_and_x0(self, output, x_t, alpha, sigma):
            return (x_t - alpha * output / 2) / sigma, output / 2

        def error_scale(self, snr):
            return 4.0

    monkeypatch.setitem(OBJECTIVES, "twice-x0", TwiceX0)
    config = smoke_config(tiny_data_dir, **{"diffusion.objective": "twice-x0", "train.max_steps": 3})
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 3 and math.isfinite(result.final_loss)


FLOW = ["--diffusion.objective", "flow", "--diffusion.schedule", "rectified-flow",
        "--diffusion.timestep_sampling", "logit-normal"]


def test_flow_matching_trains_and_samples_with_every_sampler(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "flow"
    code, _, err = cli(capsys, "train", "--preset", "smoke", "--data-dir", tiny_data_dir, "--run-dir", run,
                       "--no-progress", "--train.threads", "1", "--max-steps", "40", "--train.log_every", "10", *FLOW)
    assert code == 0, err
    import json

    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    for sampler in SAMPLERS:
        out = tmp_path / f"{sampler}.npz"
        code, _, err = cli(capsys, "sample", "--checkpoint", run, "--num", 4, "--steps", 4, "--sampler", sampler,
                           "--out", out)
        assert code == 0, (sampler, err)
        images = np.load(out)["arr_0"]
        assert images.shape == (4, 28, 28, 1) and images.std() > 0, sampler  # not a constant (black) image


def test_eps_is_refused_where_the_schedule_reaches_snr_0(tiny_data_dir):
    config = smoke_config(tiny_data_dir)
    with pytest.raises(Exception, match="where objective eps is undefined; use v, x0 or flow"):
        apply_overrides(config, {"diffusion.schedule": "rectified-flow", "diffusion.objective": "eps"}).validate()


@pytest.mark.parametrize("alpha", [0.02, 0.3, 0.7, 0.999])
def test_edm_preconditioning_gives_a_unit_variance_target_at_every_noise_level(alpha):
    """Karras et al. 2022, sec. 5: with data of standard deviation sigma_data, c_skip and c_out make the
    network's training target unit-variance whatever the noise level."""
    from tinydiffusion.objectives.edm import SIGMA_DATA

    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(200_000, generator=g, dtype=torch.float64) * SIGMA_DATA
    eps = torch.randn(200_000, generator=g, dtype=torch.float64)
    sigma = math.sqrt(1 - alpha**2)
    target = OBJECTIVES["edm"]().target(x0, eps, alpha, sigma)
    assert float(target.var()) == pytest.approx(1.0, abs=0.01)
