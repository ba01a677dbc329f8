"""`tinydiffusion export --format diffusers`: the folder loads in diffusers (DiffusionPipeline.from_pretrained, offline)
and draws tinydiffusion's images from the same noise; tinydiffusion loads it back; what it refuses; and that loading
it runs no code but the two modules it ships."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, cli_env, one_sentence
from safetensors.torch import load_file, save_file

from tinydiffusion.autoencoders import decode, load_autoencoder
from tinydiffusion.bundled import bundled
from tinydiffusion.config import DiffusionConfig, DistillConfig, RunConfig
from tinydiffusion.data.pixels import to_pixels
from tinydiffusion.errors import UserError
from tinydiffusion.export.diffusers_folder import write_diffusers
from tinydiffusion.export_formats import EXPORT_MARKER
from tinydiffusion.files import sha256_file
from tinydiffusion.nets import DiTConfig, UNetConfig, build_network
from tinydiffusion.pipeline import denoiser, generate, load_model, start_noise
from tinydiffusion.samplers import SAMPLERS

diffusers = pytest.importorskip("diffusers")

PARITY = 1e-4  # the bound, in model space [-1, 1]


@pytest.fixture(autouse=True)
def _modules_cache(tmp_path_factory, monkeypatch):
    """diffusers copies a folder's modules into its modules cache before importing them: a folder of the test's,
    never the user's ~/.cache/huggingface."""
    from diffusers.utils import dynamic_modules_utils

    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path_factory.getbasetemp() / "hf-modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def load_pipeline(folder: Path):
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(folder), trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_model(folder: Path, *, objective: str = "v", kind: str = "unet", num_classes: int = 3,
               zero_terminal_snr: bool = False, consistency: bool = False) -> Path:
    """A small network with random weights (none zero), saved as NAME.safetensors beside NAME.json."""
    common = dict(image_size=8, in_channels=1, num_classes=num_classes, guidance_input=consistency)
    net_config = (UNetConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(1,), **common) if kind == "unet"
                  else DiTConfig(patch_size=2, hidden_size=32, depth=2, num_heads=2, **common))
    distill = (DistillConfig(steps=4, teacher="tiny", method="consistency", sampler="consistency") if consistency
               else DistillConfig())
    config = RunConfig(name=f"tiny-{kind}-{objective}", net=net_config, distill=distill,
                       diffusion=DiffusionConfig(timesteps=50, objective=objective,
                                                 zero_terminal_snr=zero_terminal_snr))
    config.validate()
    torch.manual_seed(0)
    weights = {name: value + 0.05 * torch.randn_like(value) if value.is_floating_point() else value
               for name, value in build_network(net_config).state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.name}.safetensors"
    save_file(weights, str(path))
    path.with_suffix(".json").write_text(config.to_json())
    return path


def both_samples(model, pipe, sampler: str, steps: int, guidance: float, labels, seed: int = 3):
    """tinydiffusion's sampler and the diffusers pipeline, from the same noise: (theirs, ours) in model space."""
    noise, generators = start_noise(model, seed, 0, len(labels) if labels is not None else 2)
    ours = SAMPLERS[sampler](denoiser(model, labels, guidance), noise, model.diffusion, steps, generator=generators)
    theirs = pipe(class_labels=None if labels is None else labels.tolist(), num_inference_steps=steps,
                  guidance_scale=guidance, latents=noise.clone(), output_type="latent").images
    return theirs, ours


def assert_same(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    """Within 1e-4, relative to the images' scale (an untrained eps network's x0 reaches 1e3)."""
    assert torch.isfinite(ours).all()
    assert (theirs - ours).abs().max() < PARITY * max(1.0, float(ours.abs().max()))


@pytest.fixture(scope="module")
def bundled_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundled") / "model-diffusers"
    write_diffusers(load_model(None, "cpu"), folder)
    return folder


# --- the folder ----------------------------------------------------------------------------------------------------

def test_the_folder_holds_a_pipeline_a_stock_scheduler_and_the_network(bundled_folder):
    files = sorted(str(p.relative_to(bundled_folder)) for p in bundled_folder.rglob("*") if p.is_file())
    network = next(f for f in files if f.startswith("denoiser/tinydiffusion_unet_") and f.endswith(".py"))
    assert files == sorted(["model_index.json", "pipeline.py", "scheduler/scheduler_config.json",
                            "denoiser/config.json", "denoiser/diffusion_pytorch_model.safetensors",
                            "denoiser/diffusion_pytorch_model.json", network, EXPORT_MARKER])
    index = json.loads((bundled_folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "TinyDiffusionPipeline"]
    assert index["denoiser"] == [Path(network).stem, "TinyDiffusionNet"]
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert (index["objective"], index["steps"], index["guidance"], index["labels"]["sneaker"]) == ("v", 20, 1.5, 7)
    scheduler = json.loads((bundled_folder / "scheduler/scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["solver_order"] == 2
    np.testing.assert_array_equal(scheduler["trained_betas"], load_model(None, "cpu").diffusion.betas.numpy())
    marker = json.loads((bundled_folder / EXPORT_MARKER).read_text())
    assert marker == {"format": "diffusers", "tinydiffusion": __import__("tinydiffusion").__version__,
                      "files": {f: sha256_file(bundled_folder / f) for f in files if f != EXPORT_MARKER}}
    text = (bundled_folder / network).read_text() + (bundled_folder / "pipeline.py").read_text()
    assert "tinydiffusion." not in text and "import tinydiffusion" not in text  # torch and diffusers only


# --- parity: diffusers draws tinydiffusion's images ----------------------------------------------------------------

def test_the_bundled_model_draws_tinydiffusion_s_images_in_diffusers(bundled_folder):
    model, pipe = load_model(None, "cpu"), load_pipeline(bundled_folder)
    assert_same(*both_samples(model, pipe, "dpmpp-2m", 6, 1.5, torch.tensor([7, 0])))
    # A stock scheduler swapped in: DDIM (eta 0) where its steps divide T, as tinydiffusion's ddim.
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=True,
                                                         clip_sample=False)
    assert_same(*both_samples(model, pipe, "ddim", 5, 2.0, torch.tensor([1, 9])))


def test_the_defaults_give_the_pixels_tinydiffusion_sample_writes(bundled_folder):
    model, pipe = load_model(None, "cpu"), load_pipeline(bundled_folder)
    pixels, _ = generate(model, 2, classes=[7, 3], seed=5)  # dpmpp-2m, 20 steps, guidance 1.5
    noise, _ = start_noise(model, 5, 0, 2)
    images = pipe(class_labels=["sneaker", "dress"], latents=noise, output_type="np").images
    theirs = np.round(images * 255).astype(int).transpose(0, 3, 1, 2)
    assert np.abs(theirs - pixels.numpy().astype(int)).max() <= 1  # 1e-4 can round to the next level
    for labels, count in ((7, 1), (np.array([7, 1]), 2), (torch.tensor([2]), 1), (None, 10)):
        assert len(pipe(class_labels=labels, generator=torch.Generator().manual_seed(0), num_inference_steps=1,
                        batch_size=count if labels is None else None).images) == count
    with pytest.raises(ValueError, match="not one of the model's 10 classes"):
        pipe(class_labels=["unicorn"], num_inference_steps=1)


def test_the_bundled_student_draws_its_images_in_diffusers(tmp_path):
    model = load_model(bundled().student(), "cpu")
    write_diffusers(model, tmp_path / "student")
    pipe = load_pipeline(tmp_path / "student")
    assert pipe.scheduler.config.solver_order == 1  # DDIM, the student's sampler
    assert_same(*both_samples(model, pipe, "ddim", 4, 2.5, torch.tensor([7, 0, 4])))
    with pytest.raises(ValueError, match="learned guidance scales from 1 to 3"):
        pipe(class_labels=[7], guidance_scale=5.0)


def test_a_student_samples_only_at_its_own_steps_as_tinydiffusion_does(tmp_path):
    """generate() refuses a trajectory student's other step counts (pipeline.sampling_settings); so does the folder."""
    model = load_model(bundled().student(1), "cpu")
    with pytest.raises(UserError, match="distilled to sample with 1 ddim step"):
        generate(model, 1, steps=2)
    write_diffusers(model, tmp_path / "student")
    pipe = load_pipeline(tmp_path / "student")
    for steps in (2, 4):
        with pytest.raises(ValueError) as caught:
            pipe(class_labels=[7], num_inference_steps=steps)
        one_sentence(caught, "distilled to sample with 1 step", f"not {steps}")
    assert pipe(class_labels=[7], num_inference_steps=1, output_type="latent").images.shape == (1, 1, 28, 28)
    assert pipe(class_labels=[7], output_type="latent").images.shape == (1, 1, 28, 28)


@pytest.mark.parametrize("arguments, fragment", [
    ({"batch_size": 0}, "batch_size must be 1 or more, not 0"), ({"batch_size": -3}, "not -3"),
    ({"batch_size": 2.5}, "batch_size must be a whole number"), ({"batch_size": True}, "whole number, not True"),
    ({"output_type": "bogus"}, "output_type must be 'pil', 'np', 'pt' or 'latent', not 'bogus'"),
    ({"num_inference_steps": 2.5}, "num_inference_steps must be a whole number"),
    ({"class_labels": [7, 2.5]}, "a class label must be a whole number, not 2.5")])
def test_the_pipeline_refuses_a_bad_argument_in_one_sentence(bundled_folder, arguments, fragment):
    pipe = load_pipeline(bundled_folder)
    with pytest.raises(ValueError) as caught:
        pipe(**{"class_labels": [7], "num_inference_steps": 1, "generator": torch.Generator().manual_seed(0),
                **arguments})
    one_sentence(caught, fragment)


@pytest.mark.parametrize("kind,objective,sampler,steps", [
    ("unet", "eps", "dpmpp-2m", 7), ("unet", "x0", "dpmpp-2m", 5), ("dit", "flow", "dpmpp-2m", 6),
    ("unet", "edm", "dpmpp-2m", 4), ("dit", "v", "dpmpp-2m", 3)])
def test_every_objective_and_network_draws_the_same_images(tmp_path, kind, objective, sampler, steps):
    model = load_model(tiny_model(tmp_path, kind=kind, objective=objective), "cpu")
    write_diffusers(model, tmp_path / "out")
    assert_same(*both_samples(model, load_pipeline(tmp_path / "out"), sampler, steps, 2.0, torch.tensor([0, 1, 2])))


def test_a_zero_terminal_snr_model_gets_ddim_and_draws_the_same_images(tmp_path):
    model = load_model(tiny_model(tmp_path, objective="v", zero_terminal_snr=True), "cpu")
    write_diffusers(model, tmp_path / "out")
    pipe = load_pipeline(tmp_path / "out")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert_same(*both_samples(model, pipe, "ddim", 5, 1.5, torch.tensor([2, 0])))  # 5 divides T = 50


def test_an_unconditional_model_takes_no_labels(tmp_path):
    model = load_model(tiny_model(tmp_path, num_classes=0), "cpu")
    write_diffusers(model, tmp_path / "out")
    pipe = load_pipeline(tmp_path / "out")
    assert_same(*both_samples(model, pipe, "dpmpp-2m", 4, 1.0, None))
    with pytest.raises(ValueError, match="unconditional"):
        pipe(class_labels=[0], num_inference_steps=1)


# --- a latent model: its decoder is the folder's `vae` ---------------------------------------------------------------

@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    """A tiny latent model (TAEF2's latents of 32-px colour images) and its folder."""
    from test_export import tiny_model as latent_model

    model = load_model(latent_model(tmp_path_factory.mktemp("latent"), latent=True), "cpu")
    folder = tmp_path_factory.mktemp("latent-diffusers") / "out"
    write_diffusers(model, folder)
    return model, folder


def test_a_latent_model_s_folder_ships_its_decoder_as_the_vae(latent):
    model, folder = latent
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    vae = next(f for f in files if f.startswith("vae/tinydiffusion_taef2_") and f.endswith(".py"))
    assert {"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/LICENSE-taef2.md", vae} <= files
    index = json.loads((folder / "model_index.json").read_text())
    assert index["vae"] == [Path(vae).stem, "TinyDiffusionDecoder"]
    assert (index["latent_mean"], index["latent_std"]) == (list(model.config.data.latent_mean),
                                                           list(model.config.data.latent_std))
    code = (folder / vae).read_text()
    assert "tinydiffusion." not in code and "import tinydiffusion" not in code  # torch and diffusers only
    assert "class Decoder" in code and "load_taef2" not in code and "hashlib" not in code  # the class, no loader
    decoder = {key for key in load_autoencoder("taef2").state_dict() if key.startswith("decoder.")}
    assert set(load_file(folder / "vae/diffusion_pytorch_model.safetensors")) == decoder  # no encoder, same names
    licence = (folder / "vae/LICENSE-taef2.md").read_text()
    assert "diffusion_pytorch_model.safetensors holds the weights of taef2's decoder" in licence
    assert "MIT License" in licence and "Ollin Boer Bohan" in licence


def test_a_latent_model_s_pipeline_samples_and_decodes_tinydiffusion_s_images(latent):
    model, folder = latent
    pipe = load_pipeline(folder)
    assert_same(*both_samples(model, pipe, "dpmpp-2m", 5, 2.0, torch.tensor([0, 2])))  # the latents, not decoded
    noise, _ = start_noise(model, 5, 0, 2)
    images = pipe(class_labels=[1, 2], latents=noise, num_inference_steps=4, output_type="pt").images
    ours = SAMPLERS["dpmpp-2m"](denoiser(model, torch.tensor([1, 2]), 1.5), noise, model.diffusion, 4)
    assert images.shape == (2, 3, 32, 32)
    assert (images - (decode(model.config.data, ours) / 2 + 0.5).clamp(0, 1)).abs().max() < PARITY
    pixels, _ = generate(model, 2, classes=[1, 2], steps=4, seed=5)
    theirs = pipe(class_labels=[1, 2], latents=noise, num_inference_steps=4, output_type="np").images
    assert np.abs(np.round(theirs * 255).astype(int).transpose(0, 3, 1, 2) - pixels.numpy().astype(int)).max() <= 1


def test_a_decoder_whose_shipped_code_differs_is_refused_and_nothing_written(latent, tmp_path, monkeypatch):
    from tinydiffusion.export import diffusers_folder

    model, _ = latent
    real = diffusers_folder.needed_source

    def softer_clamp(cls):  # the generated decoder clamps its latents at 2 instead of 3 (the network's is as it is)
        files, imports, code = real(cls)
        return files, imports, code.replace("3 * torch.tanh(z / 3)", "2 * torch.tanh(z / 2)")

    def no_such_constructor(cls):
        if cls.__name__ != "TinyAutoencoder":  # the network's code is as it is
            return real(cls)
        return ["nets/taef2.py"], [], "class TinyAutoencoder:\n    pass"

    for needed, fragments in ((softer_clamp, ("taef2's decoder", "does not compute what", "--format onnx")),
                              (no_such_constructor, ("cannot be shipped as one module", "TypeError"))):
        monkeypatch.setattr(diffusers_folder, "needed_source", needed)
        with pytest.raises(UserError) as caught:
            write_diffusers(model, tmp_path / "out")
        one_sentence(caught, *fragments)
        assert not (tmp_path / "out").exists()


# --- tinydiffusion reads the folder back -----------------------------------------------------------------------------

def test_a_trained_run_exports_loads_back_and_samples_the_same(trained_run, tmp_path, capsys):
    out = tmp_path / "run-diffusers"
    code, stdout, err = cli(capsys, "export", trained_run, "--format", "diffusers", "--out", out)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} (") and "trust_remote_code=True" in stdout
    model, again = load_model(trained_run, "cpu"), load_model(out, "cpu")
    assert again.config == model.config.__class__.from_dict({**model.config.to_dict(), "data": {
        **model.config.to_dict()["data"], "data_dir": ""}})
    assert all(torch.equal(a, b) for a, b in zip(model.net.state_dict().values(), again.net.state_dict().values(),
                                                 strict=True))
    assert_same(*both_samples(model, load_pipeline(out), "dpmpp-2m", 5, 1.5, torch.tensor([3, 8])))
    for source in (trained_run, out):
        assert cli(capsys, "sample", "--checkpoint", source, "--num", "2", "--steps", "3", "--seed", "1",
                   "--out", tmp_path / f"{source.name}.npz")[0] == 0
    first, second = (np.load(tmp_path / f"{source.name}.npz")["arr_0"] for source in (trained_run, out))
    np.testing.assert_array_equal(first, second)


def test_a_later_export_replaces_an_earlier_one(tmp_path, capsys):
    weights = tiny_model(tmp_path / "ckpt")
    out = tmp_path / "out"
    for _ in range(2):
        assert cli(capsys, "export", weights, "--format", "diffusers", "--out", out)[0] == 0
    assert (out / EXPORT_MARKER).is_file() and not list(tmp_path.glob(".*"))  # no temporaries left


# --- refusals ----------------------------------------------------------------------------------------------------

def test_export_refuses_a_folder_of_the_user_s_own_and_a_file(tmp_path, capsys):
    weights = tiny_model(tmp_path / "ckpt")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "export", weights, "--format", "diffusers", "--out", mine)
    assert code == 2 and "a folder that an export did not write" in one_sentence(err.strip())
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    afile = tmp_path / "model.txt"
    afile.write_text("a file")
    code, _, err = cli(capsys, "export", weights, "--format", "diffusers", "--out", afile)
    assert code == 2 and "is a file; give a folder name" in one_sentence(err.strip())
    assert afile.read_text() == "a file"


def test_export_refuses_a_consistency_student_in_one_sentence(tmp_path, capsys):
    weights = tiny_model(tmp_path / "ckpt", consistency=True)
    code, _, err = cli(capsys, "export", weights, "--format", "diffusers", "--out", tmp_path / "out")
    assert code == 2 and "consistency sampler, which no stock diffusers scheduler" in one_sentence(err.strip())
    assert not (tmp_path / "out").exists()


def test_a_network_whose_code_cannot_be_shipped_is_refused_and_nothing_written(tmp_path, monkeypatch):
    from tinydiffusion.export import diffusers_folder

    model = load_model(tiny_model(tmp_path), "cpu")
    real = diffusers_folder.needed_source

    def without_layers(cls):  # only the network's own module's section, not nets/layers.py's before it
        files, imports, code = real(cls)
        return files[-1:], imports, code[code.rindex("# --- from tinydiffusion/"):]

    monkeypatch.setattr(diffusers_folder, "needed_source", without_layers)
    with pytest.raises(UserError) as caught:
        write_diffusers(model, tmp_path / "out")
    one_sentence(caught, "cannot be shipped as one module", "NameError", "--format onnx")
    assert not (tmp_path / "out").exists()


# --- loading runs nothing else -------------------------------------------------------------------------------------

def test_loading_runs_only_the_two_modules_the_folder_ships(tmp_path):
    model = load_model(tiny_model(tmp_path), "cpu")
    out = tmp_path / "out"
    write_diffusers(model, out)
    with pytest.raises(ValueError, match="trust_remote_code"):  # diffusers asks before it runs them
        diffusers.DiffusionPipeline.from_pretrained(str(out))
    ran = tmp_path / "ran"
    planted = [out / "evil.py", out / "__init__.py", out / "denoiser" / "evil.py", out / "denoiser" / "__init__.py",
               out / "scheduler" / "evil.py", out / "scheduler" / "scheduler.py"]
    for path in planted:
        path.write_text(f"open({str(ran)!r}, 'a').write({str(path)!r})\n")
    pipe = load_pipeline(out)
    assert pipe(class_labels=[0], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                output_type="latent").images.shape == (1, 1, 8, 8)
    assert not ran.exists()


def test_a_pipeline_loaded_earlier_still_runs_after_the_folder_is_loaded_again(tmp_path):
    """diffusers executes the network's file again at every load; the first pipeline's layers stay its own."""
    model = load_model(tiny_model(tmp_path), "cpu")
    write_diffusers(model, tmp_path / "out")
    first = load_pipeline(tmp_path / "out")
    second = load_pipeline(tmp_path / "out")
    assert type(first.denoiser) is type(second.denoiser)
    assert_same(*both_samples(model, first, "dpmpp-2m", 3, 1.0, torch.tensor([1])))


def test_the_folder_works_where_tinydiffusion_cannot_be_imported(bundled_folder, tmp_path):
    """In a fresh process whose imports of tinydiffusion fail: the folder needs torch and diffusers only."""
    script = tmp_path / "load.py"
    script.write_text(f"""
import sys

class NoTinydiffusion:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tinydiffusion":
            raise ImportError("tinydiffusion is not installed here")

sys.meta_path.insert(0, NoTinydiffusion())
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained({str(bundled_folder)!r}, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
noise = torch.load({str(tmp_path / "noise.pt")!r})
torch.save(pipe(class_labels=[7], num_inference_steps=4, latents=noise, output_type="latent").images,
           {str(tmp_path / "images.pt")!r})
assert not any(name.startswith("tinydiffusion") for name in sys.modules)
""")
    model = load_model(None, "cpu")
    noise, _ = start_noise(model, 0, 0, 1)
    torch.save(noise, tmp_path / "noise.pt")
    env = {**cli_env(), "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    ours = SAMPLERS["dpmpp-2m"](denoiser(model, torch.tensor([7]), 1.5), noise, model.diffusion, 4)
    assert_same(torch.load(tmp_path / "images.pt"), ours)
    assert to_pixels(ours).shape == (1, 1, 28, 28)
