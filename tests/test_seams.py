"""The seams of issue 14: the process in continuous time, samplers handed their levels by spacing functions,
and networks that own their configs. Each extension point is exercised by adding something through it."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import cli, gaussian_denoiser, smoke_config
from hypothesis import given, settings
from hypothesis import strategies as st

from tinydiffusion.config import DiffusionConfig, RunConfig, apply_overrides
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.errors import UserError
from tinydiffusion.fields import Choice, option
from tinydiffusion.loss_weighting import LOSS_WEIGHTINGS
from tinydiffusion.nets import NETWORKS, NetConfig
from tinydiffusion.samplers import CLEAN, SAMPLERS, Sampler, karras_levels, uniform_levels
from tinydiffusion.samplers.ddim import ddim
from tinydiffusion.schedules import SCHEDULES, Schedule
from tinydiffusion.timestep_sampling import TIMESTEP_SAMPLINGS
from tinydiffusion.training import train

PROCESSES = {
    "linear": DiffusionConfig(schedule="linear"),
    "cosine": DiffusionConfig(schedule="cosine"),
    "zero-terminal-snr": DiffusionConfig(schedule="linear", zero_terminal_snr=True, objective="v"),
    "rectified-flow": DiffusionConfig(schedule="rectified-flow", objective="flow", timesteps=500),
}


# --- the process in continuous time ------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROCESSES))
def test_the_discrete_steps_are_points_of_the_continuous_process(name):
    """At t = (k + 1) / T, alpha(t) and sigma(t) are the table's values bit for bit, in float32 as training
    uses them and as Python floats as samplers do, and the network is given exactly the step k."""
    diffusion = GaussianDiffusion(PROCESSES[name])
    steps = torch.arange(diffusion.num_timesteps)
    t = diffusion.step_time(steps)
    alpha, sigma = diffusion.alpha_sigma(t, torch.zeros(len(t), 1))
    ab = diffusion.alphas_cumprod
    assert torch.equal(alpha.flatten(), ab.sqrt().float()) and torch.equal(sigma.flatten(), (1 - ab).sqrt().float())
    assert torch.equal(diffusion.network_time(t), steps.float())
    assert torch.equal(diffusion.network_time(t.float()), steps.float())  # float32 times snap to the steps too
    for k in (0, diffusion.num_timesteps // 3, diffusion.num_timesteps - 1):
        assert diffusion.alpha_sigma_at(float(t[k])) == (math.sqrt(float(ab[k])), math.sqrt(1 - float(ab[k])))
    assert diffusion.alpha_sigma_at(0.0) == (1.0, 0.0)


@pytest.mark.parametrize("name", list(PROCESSES))
@given(fraction=st.floats(0.0, 1.0))
@settings(max_examples=40, deadline=None)
def test_time_of_noise_inverts_the_noise_level(name, fraction):
    """Between the steps the process interpolates log(sigma / alpha); time_of_noise is its inverse, up to the
    snap of times within 1e-3 of a step onto it (log(sigma / alpha) changes by at most ~0.5 per step)."""
    diffusion = GaussianDiffusion(PROCESSES[name])
    lowest, highest = diffusion.noise_range()
    noise = math.exp(math.log(lowest) + fraction * (math.log(highest) - math.log(lowest)))
    t = float(diffusion.time_of_noise(noise))
    alpha, sigma = diffusion.alpha_sigma_at(t)
    assert alpha**2 + sigma**2 == pytest.approx(1.0, abs=1e-12)
    assert sigma / alpha == pytest.approx(noise, rel=1e-3)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_noise_grows_with_time(name):
    diffusion = GaussianDiffusion(PROCESSES[name])
    t = torch.linspace(1 / diffusion.num_timesteps, 1, 5001, dtype=torch.float64)
    alpha, sigma = diffusion.alpha_sigma(t, torch.zeros(len(t)))
    assert (sigma[1:] >= sigma[:-1]).all() and (alpha[1:] <= alpha[:-1]).all()


# --- samplers handed their levels ----------------------------------------------------------------

@pytest.mark.parametrize("name", list(PROCESSES))
def test_spacing_functions_give_levels_from_the_noisiest_down_to_clean(name):
    diffusion = GaussianDiffusion(PROCESSES[name])
    for levels in (uniform_levels(diffusion, 10), uniform_levels(diffusion, 7, spacing="leading"),
                   karras_levels(diffusion, 10)):
        assert levels[-1] == CLEAN and len(levels) in (8, 11)
        assert all(a.alpha**2 + a.sigma**2 == pytest.approx(1.0) for a in levels)
        noise = [a.sigma / a.alpha if a.alpha > 0 else math.inf for a in levels]
        assert all(n0 > n1 for n0, n1 in zip(noise, noise[1:], strict=False))
        times = [a.t for a in levels[:-1]]
        assert all(0 <= t <= diffusion.num_timesteps - 1 for t in times)
    karras = karras_levels(diffusion, 10, sigma_max=80.0)
    assert karras[0].sigma / karras[0].alpha == pytest.approx(min(80.0, diffusion.noise_range()[1]))


def test_an_algorithm_walks_any_spacing(monkeypatch):
    """A new sampler is one registration: here DDIM handed Karras levels, which it never saw before, draws
    the exact Gaussian, and generate() and the option checks take it like any other."""
    monkeypatch.setitem(SAMPLERS, "ddim-karras", Sampler(ddim, karras_levels, default_steps=40))
    diffusion = GaussianDiffusion(DiffusionConfig(schedule="cosine"))
    noise = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = SAMPLERS["ddim-karras"](gaussian_denoiser(), noise, diffusion, 60, rho=7.0)
    assert x0.mean().item() == pytest.approx(0.3, abs=0.015) and x0.std().item() == pytest.approx(0.25, abs=0.015)
    from tinydiffusion.samplers import sampler_options

    assert sampler_options("ddim-karras") == {"rho": 7.0, "sigma_max": 80.0, "eta": 0.0, "clip_x0": False}
    with pytest.raises(UserError, match="does not take spacing"):
        SAMPLERS["ddim-karras"](gaussian_denoiser(), noise, diffusion, 5, spacing="leading")


def ddim_copy(denoise, x, levels, *, callback=None, generator=None):
    """A sampler of this test's own: DDIM (eta 0) under another name."""
    return ddim(denoise, x, levels, callback=callback, generator=generator)


def test_a_new_sampler_is_one_registration_end_to_end(monkeypatch, capsys):
    """One entry in SAMPLERS (issue 47): `sample --help` offers it with its default steps, the demo lists it, the
    exports whose capability its entry declares offer it, a teacher may walk with it, and generate() draws with it."""
    from tinydiffusion.demo.handlers import sampler_choices
    from tinydiffusion.export_formats import EXPORT_FORMATS
    from tinydiffusion.pipeline import generate, load_model
    from tinydiffusion.samplers import teacher_samplers

    monkeypatch.setitem(SAMPLERS, "ddim-copy", Sampler(ddim_copy, uniform_levels, default_steps=3, deterministic=True,
                                                       diffusers_order=1))
    code, out, _ = cli(capsys, "sample", "--help")
    text = " ".join(out.split())
    assert code == 0 and "{ddpm,ddim,dpmpp-2m,euler,heun,consistency,ddim-copy}" in text and "ddim-copy 3," in text
    model = load_model(None, "cpu")
    assert sampler_choices(model)[-1] == "ddim-copy" and "ddim-copy" in teacher_samplers()
    offered = {name: "ddim-copy" in export.samplers() for name, export in EXPORT_FORMATS.items()}
    assert offered == {"onnx": True, "web": False, "diffusers": True}  # the web page's script has no such sampler
    images, _ = generate(model, 2, classes=[7], sampler="ddim-copy")
    assert torch.equal(images, generate(model, 2, classes=[7], sampler="ddim", steps=3)[0])


# --- networks own their configs ----------------------------------------------------------------

@dataclasses.dataclass
class TinyConvConfig(NetConfig):
    """A network registered by a test: its config class (fields, checks, memory estimate, build) and a line in
    NETWORKS are all it takes."""
    kind: str = option("tiny-conv", "which network")
    width: int = option(8, "channels of the hidden layer")

    def checks(self):
        return super().checks() + [(1 <= self.width <= 64, "net.width must be between 1 and 64")]

    def build(self):
        return TinyConv(self)

    def activation_floats(self, training: bool) -> int:
        return 4 * self.width * self.image_size**2


class TinyConv(torch.nn.Module):
    def __init__(self, config: TinyConvConfig):
        super().__init__()
        c, w = config.in_channels, config.width
        self.body = torch.nn.Sequential(torch.nn.Conv2d(c + 1, w, 3, padding=1), torch.nn.SiLU(),
                                        torch.nn.Conv2d(w, c, 3, padding=1))

    def forward(self, x, t, y=None):
        time = (t.float() / 1000).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.body(torch.cat([x, time], dim=1))


def test_a_network_is_its_config_class_and_one_registration(tiny_data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(NETWORKS, "tiny-conv", TinyConvConfig)
    config = smoke_config(tiny_data_dir, **{"net.kind": "tiny-conv", "net.width": "6", "train.max_steps": 3})
    assert isinstance(config.net, TinyConvConfig) and config.net.width == 6
    assert config.net.num_classes == 10  # the shared fields carry over from the preset's network
    assert RunConfig.from_dict(config.to_dict()) == config  # config.json round-trips to the same class
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 3 and math.isfinite(result.final_loss)
    code, out, err = cli(capsys, "sample", "--checkpoint", tmp_path / "run", "--num", "2", "--steps", "2",
                         "--out", tmp_path / "s.png")
    assert code == 0, err
    with pytest.raises(UserError, match="net.width must be between 1 and 64"):
        apply_overrides(config, {"net.width": "0"}).validate()
    with pytest.raises(UserError, match="--net.base_channels is a setting of the unet network, and this run's "
                                        "network is tiny-conv"):
        apply_overrides(config, {"net.base_channels": "8"})


def test_a_schedule_a_time_draw_and_a_loss_weighting_are_one_function_and_one_registration(tiny_data_dir, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setitem(SCHEDULES, "constant", Schedule(
        lambda d: torch.full((d.timesteps,), 0.01, dtype=torch.float64), "every beta 0.01"))
    monkeypatch.setitem(TIMESTEP_SAMPLINGS, "noisy-half", Choice(
        lambda diffusion, batch, generator, device: 0.5 + 0.5 * torch.rand(batch, generator=generator, device=device,
                                                                           dtype=torch.float64), "t above 0.5"))
    monkeypatch.setitem(LOSS_WEIGHTINGS, "snr-capped", Choice(lambda snr, diffusion: snr.clamp(max=2.0),
                                                              "SNR, at most 2"))
    config = smoke_config(tiny_data_dir, **{"diffusion.schedule": "constant", "train.max_steps": 3,
                                            "diffusion.timestep_sampling": "noisy-half",
                                            "diffusion.loss_weighting": "snr-capped"})
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 3 and math.isfinite(result.final_loss)
    diffusion = GaussianDiffusion(config.diffusion)
    assert torch.allclose(diffusion.betas, torch.full((config.diffusion.timesteps,), 0.01, dtype=torch.float64))
    assert (diffusion.draw_times(64, torch.Generator().manual_seed(0), "cpu") >= 0.5).all()
    with pytest.raises(UserError, match="diffusion.schedule must be one of linear, cosine, rectified-flow, constant, "):
        apply_overrides(config, {"diffusion.schedule": "nope"}).validate()


def test_the_help_of_a_registry_field_names_each_entry():
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(DiffusionConfig)}
    for name, registry in (("schedule", SCHEDULES), ("timestep_sampling", TIMESTEP_SAMPLINGS),
                           ("loss_weighting", LOSS_WEIGHTINGS)):
        assert all(f"{entry} ({choice.help})" in helps[name] for entry, choice in registry.items()), name


def test_configs_of_the_flat_format_still_load():
    """config.json files written before networks had their own classes list every network's fields."""
    flat = {"kind": "dit", "image_size": 28, "in_channels": 1, "num_classes": 10, "dropout": 0.0,
            "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attention_levels": [2],
            "upsample_conv": True, "stem_patch": 1, "patch_size": 4, "hidden_size": 144, "depth": 4,
            "num_heads": 3, "mlp_ratio": 4.0, "learned_pos_embed": False}
    net = RunConfig.from_dict({"net": flat}).net
    assert type(net).__name__ == "DiTConfig" and net.hidden_size == 144 and not hasattr(net, "base_channels")
    with pytest.raises(UserError, match="net.kind must be one of unet, dit, not 'resnet'"):
        RunConfig.from_dict({"net": {**flat, "kind": "resnet"}})
    with pytest.raises(UserError, match="unknown field"):
        RunConfig.from_dict({"net": {**flat, "widht": 3}})


def test_edm_preconditioning_trains_on_log_normal_times_and_samples(tiny_data_dir, tmp_path, capsys):
    """EDM's objective and its draw of t between the steps go through the same seams as the others."""
    config = smoke_config(tiny_data_dir, **{"diffusion.objective": "edm", "diffusion.timestep_sampling": "log-normal",
                                            "train.max_steps": 3})
    result = train(config, tmp_path / "run", progress=False)
    assert result.step == 3 and math.isfinite(result.final_loss)
    for sampler in SAMPLERS:
        code, _, err = cli(capsys, "sample", "--checkpoint", tmp_path / "run", "--num", "2", "--steps", "3",
                           "--sampler", sampler, "--out", tmp_path / f"{sampler}.png")
        assert code == 0, (sampler, err)
