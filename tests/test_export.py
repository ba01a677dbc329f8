"""ONNX export (`tinydiffusion export`) and sampling through the exported graph (`sample --runtime onnxruntime`):
the graph's contract, its metadata, parity with PyTorch for every sampler, and hostile input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, run_cli
from safetensors.torch import save_file

from tinydiffusion.bundled import bundled as bundled_model
from tinydiffusion.config import DataConfig, DiffusionConfig, DistillConfig, RunConfig
from tinydiffusion.data.pixels import to_pixels
from tinydiffusion.diffusion import GaussianDiffusion
from tinydiffusion.export import DenoiserGraph, OnnxGraph, metadata, onnx_bytes
from tinydiffusion.nets import DiTConfig, UNetConfig, build_network
from tinydiffusion.pipeline import denoiser, load_model, start_noise
from tinydiffusion.samplers import SAMPLERS

MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"the onnx extra is not installed (no {', '.join(MISSING)}); "
                                "pip install '.[onnx]'")

PARITY = 1e-4  # the bound: the same images as PyTorch on the same noise, in model space [-1, 1]


def latent_data(seed: int = 0) -> DataConfig:
    """The data section of a latent run on 32-px colour images (TAEF2's latents: 32 x 4 x 4), with statistics of
    the size TAEF2's latents have (mean about 0, spread about 0.85)."""
    rng = np.random.default_rng(seed)
    return DataConfig(source="colours", image_size=32, channels=3, autoencoder="taef2", image_shape=(3, 32, 32),
                      latent_mean=tuple(rng.uniform(-0.2, 0.2, 32).round(4).tolist()),
                      latent_std=tuple(rng.uniform(0.6, 1.2, 32).round(4).tolist()))


def tiny_model(folder: Path, *, objective: str = "v", kind: str = "unet", num_classes: int = 3,
               student: bool = False, zero_terminal_snr: bool = False, seed: int = 0, latent: bool = False) -> Path:
    """A small network with random weights (every layer non-zero, so its output depends on all its inputs), saved
    as NAME.safetensors beside NAME.json: a checkpoint as `sample --checkpoint` takes it. `latent`: a latent run's,
    over TAEF2's latents of 32-px colour images (latent_data)."""
    shape = dict(image_size=4, in_channels=32) if latent else dict(image_size=8, in_channels=1)
    common = dict(**shape, num_classes=num_classes, guidance_input=student)
    net_config = (UNetConfig(base_channels=8, channel_mults=(1, 2), attention_levels=(1,), **common) if kind == "unet"
                  else DiTConfig(patch_size=2, hidden_size=32, depth=2, num_heads=2, **common))
    config = RunConfig(name=f"tiny-{kind}-{objective}{'-latent' if latent else ''}", net=net_config,
                       diffusion=DiffusionConfig(timesteps=50, objective=objective,
                                                 zero_terminal_snr=zero_terminal_snr),
                       distill=DistillConfig(steps=4, teacher="tiny") if student else DistillConfig(),
                       data=latent_data(seed) if latent else DataConfig())
    config.validate()
    torch.manual_seed(seed)
    net = build_network(net_config)
    weights = {name: value + 0.05 * torch.randn_like(value) if value.is_floating_point() else value
               for name, value in net.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.name}{'-student' if student else ''}.safetensors"
    save_file(weights, str(path))
    path.with_suffix(".json").write_text(config.to_json())
    return path


def as_graph(model) -> OnnxGraph:
    return OnnxGraph(onnx_bytes(model), threads=1)


# --- the graph, in torch ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["eps", "x0", "v", "flow", "edm"])
def test_the_graph_is_the_network_and_the_objectives_conversion(tmp_path, objective):
    """(x0, eps) from the graph at continuous times, on and between the steps, are the process's own conversion
    of the network's output there, and x = alpha(t) x0 + sigma(t) eps."""
    model = load_model(tiny_model(tmp_path, objective=objective), "cpu")
    diffusion = model.diffusion
    graph = DenoiserGraph(model.net, diffusion)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1 / 50, 7 / 50, 0.3337, 0.81, 1.0])  # steps 0 and 6, two times between steps, the last
    y = torch.tensor([0, 1, 2, 3, 1])  # 3 is the null class
    x0, eps = graph(x, t, y)
    eps_ref, x0_ref = diffusion.predict_eps_and_x0(model.net(x, diffusion.network_time(t), y), x, t.double())
    torch.testing.assert_close(x0, x0_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps, eps_ref, atol=1e-5, rtol=1e-5)
    alpha, sigma = diffusion.alpha_sigma(t.double(), x)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x, atol=1e-5, rtol=1e-5)


def test_the_graphs_schedule_is_the_process_s_at_any_time():
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=1000, zero_terminal_snr=True, objective="v"))
    graph = DenoiserGraph(torch.nn.Identity(), diffusion)
    t = torch.cat([torch.arange(1, 1001) / 1000, torch.rand(500, generator=torch.Generator().manual_seed(0))])
    position, alpha, sigma = graph.schedule(t)
    x = torch.zeros(len(t), 1)
    alpha_ref, sigma_ref = diffusion.alpha_sigma(t.double(), x)
    torch.testing.assert_close(position, diffusion.network_time(t.double()), atol=2e-4, rtol=0)
    torch.testing.assert_close(alpha, alpha_ref.view(-1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sigma, sigma_ref.view(-1), atol=1e-6, rtol=1e-5)
    assert float(alpha[999]) == 0.0 and float(sigma[999]) == 1.0  # SNR 0 at t = 1, with no NaN


# --- the ONNX file ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_file(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("student"), student=True)


@needs_onnx
def test_the_file_has_the_contract_s_inputs_outputs_opset_and_metadata(tmp_path, student_file):
    import onnx

    model = load_model(student_file, "cpu")
    proto = onnx.load_from_string(onnx_bytes(model))
    onnx.checker.check_model(proto)
    kinds = {v.name: (v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
             for v in [*proto.graph.input, *proto.graph.output]}
    float32, int64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    batch = kinds["x"][1][0]
    assert isinstance(batch, str) and batch  # a named, dynamic batch dimension
    assert kinds == {"x": (float32, [batch, 1, 8, 8]), "t": (float32, [batch]), "y": (int64, [batch]),
                     "guidance": (float32, [batch]), "x0": (float32, [batch, 1, 8, 8]),
                     "eps": (float32, [batch, 1, 8, 8])}
    assert [i.name for i in proto.graph.input] == ["x", "t", "y", "guidance"]
    assert {o.domain or "ai.onnx": o.version for o in proto.opset_import}["ai.onnx"] == 18
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["tinydiffusion"])
    assert meta == json.loads(json.dumps(metadata(model)))
    assert meta["image_shape"] == [1, 8, 8] and meta["class_names"] == ["0", "1", "2"] and meta["null_class"] == 3
    assert meta["objective"] == "v" and (meta["sampler"], meta["steps"]) == ("ddim", 4)
    assert meta["guidance_range"] == [1.0, 3.0] and meta["inputs"] == ["x", "t", "y", "guidance"]
    schedule = meta["schedule"]
    assert len(schedule["t"]) == len(schedule["alpha"]) == len(schedule["sigma"]) == 50
    assert schedule["t"][0] == 1 / 50 and schedule["t"][-1] == 1.0
    np.testing.assert_allclose(np.square(schedule["alpha"]) + np.square(schedule["sigma"]), 1.0, atol=1e-12)
    assert meta["tinydiffusion_version"] == __import__("tinydiffusion").__version__


@needs_onnx
def test_onnxruntime_runs_the_graph_at_any_batch_as_torch_does(student_file):
    model = load_model(student_file, "cpu")
    graph, reference = as_graph(model), DenoiserGraph(model.net, model.diffusion, guidance_input=True)
    generator = torch.Generator().manual_seed(1)
    for n in (1, 3, 7):
        x = torch.randn(n, 1, 8, 8, generator=generator)
        t = torch.rand(n, generator=generator)
        y = torch.randint(0, 4, (n,), generator=generator)
        w = 1 + 2 * torch.rand(n, generator=generator)
        x0, eps = graph.run(x.numpy(), t.numpy(), y.numpy(), w.numpy())
        x0_ref, eps_ref = reference(x, t, y, w)
        np.testing.assert_allclose(x0, x0_ref.detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(eps, eps_ref.detach().numpy(), atol=1e-5)


# --- parity: every sampler, through onnxruntime -----------------------------------------------------------------

def sample_both(model, graph, sampler: str, steps: int, guidance: float, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's result with the torch network and with the graph in onnxruntime, from the same noise."""
    results = []
    for runtime in (None, graph):
        with_runtime = dataclasses.replace(model, graph=runtime)
        noise, generators = start_noise(model, 3, 0, len(labels))
        results.append(SAMPLERS[sampler](denoiser(with_runtime, labels, guidance), noise, model.diffusion, steps,
                                         generator=generators))
    return results[0], results[1]


@needs_onnx
@pytest.mark.parametrize("kind,objective", [("unet", "eps"), ("unet", "x0"), ("dit", "flow"), ("unet", "edm")])
def test_every_objective_and_network_samples_the_same_images_through_onnxruntime(tmp_path, kind, objective):
    """Relative to the images' scale: an untrained eps network's x0 reaches 1e3, where float32 keeps 1e-4."""
    model = load_model(tiny_model(tmp_path, kind=kind, objective=objective), "cpu")
    torch_x0, onnx_x0 = sample_both(model, as_graph(model), "dpmpp-2m", 10, 2.0, torch.tensor([0, 1, 2]))
    assert (torch_x0 - onnx_x0).abs().max() < PARITY * max(1.0, float(torch_x0.abs().max()))


@pytest.fixture(scope="module")
def bundled():
    model = load_model(None, "cpu")
    return model, as_graph(model)


@needs_onnx
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_draws_the_bundled_model_s_images_through_onnxruntime(bundled, sampler):
    """The issue's parity: the same images as PyTorch within 1e-4, with guidance (both halves in one batch)."""
    model, graph = bundled
    steps = {"ddpm": 25, "heun": 4}.get(sampler, 6)
    torch_x0, onnx_x0 = sample_both(model, graph, sampler, steps, 1.5, torch.tensor([7, 0]))
    assert torch.isfinite(torch_x0).all()
    assert (torch_x0 - onnx_x0).abs().max() < PARITY, sampler


@needs_onnx
def test_a_zero_terminal_snr_model_samples_the_same_through_onnxruntime(tmp_path):
    model = load_model(tiny_model(tmp_path, objective="v", zero_terminal_snr=True), "cpu")
    torch_x0, onnx_x0 = sample_both(model, as_graph(model), "ddim", 5, 1.0, torch.tensor([0, 1]))
    assert torch.isfinite(onnx_x0).all() and (torch_x0 - onnx_x0).abs().max() < PARITY


@needs_onnx
def test_an_unconditional_model_exports_with_y_and_samples_the_same(tmp_path):
    model = load_model(tiny_model(tmp_path, num_classes=0), "cpu")
    graph = as_graph(model)
    assert [i.name for i in graph.session.get_inputs()] == ["x", "t", "y"] and graph.metadata["null_class"] == 0
    noise, _ = start_noise(model, 0, 0, 2)
    torch_x0 = SAMPLERS["ddim"](denoiser(model, None, 1.0), noise, model.diffusion, 5)
    with_graph = dataclasses.replace(model, graph=graph)
    onnx_x0 = SAMPLERS["ddim"](denoiser(with_graph, None, 1.0), noise, model.diffusion, 5)
    assert (torch_x0 - onnx_x0).abs().max() < PARITY


# --- the numpy sampler in docs/reference/onnx.md --------------------------------------------------------------

def doc_sampler() -> str:
    text = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "onnx.md").read_text()
    return text.split("## A sampler in numpy", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


@needs_onnx
@pytest.mark.parametrize("checkpoint", [None, bundled_model().student()], ids=["bundled", "student"])
def test_the_numpy_sampler_in_the_docs_draws_what_tinydiffusion_draws(tmp_path, monkeypatch, checkpoint):
    """The page's block, run as it stands against model.onnx, is tinydiffusion's ddim on the same noise."""
    code = doc_sampler()
    assert len([line for line in code.splitlines() if line.strip()]) <= 25  # about 20 lines
    model = load_model(checkpoint, "cpu")
    (tmp_path / "model.onnx").write_bytes(onnx_bytes(model))
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, "docs/reference/onnx.md", "exec"), names)
    labels = torch.full((names["n"],), 7)
    reference = SAMPLERS["ddim"](denoiser(model, labels, names["w"]), torch.from_numpy(names["noise"]),
                                 model.diffusion, names["S"])
    assert names["S"] == (4 if checkpoint else 20) and names["w"] == 1.5
    assert np.abs(reference.numpy() - names["x"]).max() < PARITY
    assert np.abs(to_pixels(reference).numpy().astype(int) - names["pixels"]).max() <= 1


# --- the command line ------------------------------------------------------------------------------------------

@needs_onnx
def test_export_writes_the_bundled_model_and_its_student(tmp_path):
    for flags, inputs in (([], ["x", "t", "y"]), (["--fast"], ["x", "t", "y", "guidance"])):
        out = tmp_path / f"model{len(flags)}.onnx"
        result = run_cli(["export", *flags, "--format", "onnx", "--out", out])
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"wrote {out}")
        graph = OnnxGraph(out, threads=1)
        assert [i.name for i in graph.session.get_inputs()] == inputs
        assert graph.metadata["class_names"][7] == "sneaker" and graph.metadata["null_class"] == 10
        assert (graph.metadata["sampler"], graph.metadata["steps"]) == (("ddim", 4) if flags else ("dpmpp-2m", 20))
        assert graph.metadata["guidance"] == 1.5


@needs_onnx
@pytest.mark.parametrize("flags", [[], ["--fast"]])
def test_sample_with_onnxruntime_writes_the_images_torch_does(tmp_path, flags):
    common = ["sample", *(flags or ["--steps", "3"]), "--num", "3", "--seed", "5", "--class", "sneaker"]
    for runtime in ("torch", "onnxruntime"):
        result = run_cli([*common, "--runtime", runtime, "--out", tmp_path / f"{runtime}.npz"])
        assert result.returncode == 0, result.stderr
    torch_images, onnx_images = (np.load(tmp_path / f"{runtime}.npz")["arr_0"].astype(int)
                                 for runtime in ("torch", "onnxruntime"))
    assert np.abs(torch_images - onnx_images).max() <= 1  # 1e-4 in [-1, 1] can round to the next pixel value
    assert (torch_images == onnx_images).mean() > 0.99


@needs_onnx
def test_sample_reads_an_exported_file_alone(tmp_path, student_file):
    """`sample --runtime onnxruntime --checkpoint F.onnx` needs no torch weights: it draws what the checkpoint the
    file came from draws; PyTorch refuses the file in one sentence."""
    import shutil

    weights = Path(shutil.copy(student_file, tmp_path))
    shutil.copy(student_file.with_suffix(".json"), tmp_path)
    exported = tmp_path / "student.onnx"
    assert run_cli(["export", weights, "--out", exported]).returncode == 0
    common = ["sample", "--num", "4", "--seed", "2", "--guidance", "2"]
    assert run_cli([*common, "--checkpoint", weights, "--out", tmp_path / "torch.npz"]).returncode == 0
    weights.unlink()  # the file is all there is now
    result = run_cli([*common, "--runtime", "onnxruntime", "--checkpoint", exported, "--out", tmp_path / "onnx.npz"])
    assert result.returncode == 0, result.stderr
    torch_images, onnx_images = (np.load(tmp_path / f"{name}.npz")["arr_0"].astype(int) for name in ("torch", "onnx"))
    assert torch_images.shape == (4, 8, 8, 1) and np.abs(torch_images - onnx_images).max() <= 1
    refused = run_cli([*common, "--checkpoint", exported, "--out", tmp_path / "refused.npz"])
    assert refused.returncode == 2 and "sample it with --runtime onnxruntime" in refused.stderr


# --- hostile input ----------------------------------------------------------------------------------------------

def one_sentence(capsys, *args) -> str:
    code, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "is not a .safetensors file" in one_sentence(capsys, "export", text, "--out", tmp_path / "m.onnx")
    assert "does not exist" in one_sentence(capsys, "export", tmp_path / "missing", "--out", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_a_damaged_checkpoint_and_keeps_the_old_file(tmp_path, capsys):
    weights = tiny_model(tmp_path / "ckpt")
    weights.write_bytes(weights.read_bytes()[:200])
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    assert "is not a readable safetensors file" in one_sentence(capsys, "export", weights, "--out", out)
    assert out.read_bytes() == b"an earlier export"


def test_export_refuses_to_write_over_its_input_a_folder_or_where_it_cannot(tmp_path, capsys):
    weights = tiny_model(tmp_path / "ckpt")
    before = weights.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(weights)
    assert "is the checkpoint file" in one_sentence(capsys, "export", weights, "--out", link)
    assert weights.read_bytes() == before and link.is_symlink()
    folder = tmp_path / "site.onnx"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert "is a folder" in one_sentence(capsys, "export", weights, "--out", folder)
    assert (folder / "keep.txt").read_text() == "mine"
    assert "must end in .onnx" in one_sentence(capsys, "export", weights, "--out", tmp_path / "m.png")
    assert "cannot write --out" in one_sentence(capsys, "export", weights, "--out", "/sys/m.onnx")
    assert "does not exist" in one_sentence(capsys, "export", weights, "--out", tmp_path / "no" / "m.onnx")
    assert "drop RUN_OR_CHECKPOINT" in one_sentence(capsys, "export", weights, "--fast", "--out", tmp_path / "m.onnx")
    assert "chooses the bundled student of --fast" in one_sentence(capsys, "export", "--steps", "1", "--out",
                                                                    tmp_path / "m.onnx")
    assert "not 3" in one_sentence(capsys, "export", "--fast", "--steps", "3", "--out", tmp_path / "m.onnx")


@needs_onnx
def test_a_file_onnxruntime_cannot_read_or_that_tinydiffusion_did_not_write_is_one_sentence(tmp_path):
    import onnx

    from tinydiffusion.errors import UserError

    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(UserError, match="is not an ONNX model onnxruntime can run"):
        OnnxGraph(damaged)
    foreign = tmp_path / "foreign.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), foreign)
    with pytest.raises(UserError, match="not one tinydiffusion exported"):
        OnnxGraph(foreign)



# --- the benchmark -----------------------------------------------------------------------------------------------

@needs_onnx
def test_the_export_speed_benchmark_times_each_runtime_side_by_side(tmp_path):
    """Its core on a tiny model (torch.compile is left out: compiling takes a minute on two cores)."""
    import subprocess
    import sys

    from conftest import REPO, cli_env

    out = tmp_path / "speed.md"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "export_speed.py"),
                             "--checkpoint", tiny_model(tmp_path), "--rounds", "2", "--calls", "1", "--batches", "1,3",
                             "--runtimes", "eager,onnxruntime,openvino", "--threads", "1", "--markdown", out],
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| runtime", "| ---"))}
    assert list(rows)[:2] == ["eager", "onnxruntime"] and set(rows) <= {"eager", "onnxruntime", "openvino"}
    assert rows["eager"][2].strip() == "1.00x" and rows["eager"][5].strip() == "1.00x"  # against itself
    for cells in rows.values():
        if cells[0].strip() != "not installed":
            assert float(cells[0]) > 0 and float(cells[3]) > 0 and float(cells[6]) < 1e-3  # ms, and agreement


@needs_onnx
def test_an_exported_file_whose_metadata_does_not_describe_its_graph_is_one_sentence(tmp_path, capsys):
    import onnx

    model = load_model(tiny_model(tmp_path), "cpu")
    proto = onnx.load_from_string(onnx_bytes(model))
    meta = json.loads(proto.metadata_props[0].value)
    meta["config"]["net"]["image_size"] = 16  # a valid config, for another graph
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"tinydiffusion": json.dumps(meta)})
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(proto.SerializeToString())
    message = one_sentence(capsys, "sample", "--runtime", "onnxruntime", "--checkpoint", edited,
                           "--out", tmp_path / "s.png")
    assert "holds a graph its metadata does not describe" in message and not (tmp_path / "s.png").exists()
    meta["config"] = {"net": "hostile"}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"tinydiffusion": json.dumps(meta)})
    edited.write_bytes(proto.SerializeToString())
    one_sentence(capsys, "sample", "--runtime", "onnxruntime", "--checkpoint", edited, "--out", tmp_path / "s.png")


@pytest.mark.parametrize("fmt", ["web", "diffusers"])
def test_a_folder_format_refuses_an_unwritable_place_before_any_work(fmt, capsys, monkeypatch):
    """/proc admits no new files even for root: refused in one sentence, before the model is loaded."""
    from tinydiffusion import pipeline

    monkeypatch.setattr(pipeline, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = cli(capsys, "export", "--format", fmt, "--out", "/proc/tinydiffusion-site")
    assert code == 2 and err.startswith("error: cannot write --out into /proc (") and err.count("\n") == 1
