"""`tinydiffusion export --format diffusers`: a model as a folder that diffusers' DiffusionPipeline loads
(docs/reference/diffusers-folder.md lists its files and which stock scheduler stands for which sampler).

The network's code is generated from the package's own source (generated_code.py), not kept as a second copy: what
the network's class needs of its module (nets/unet.py or nets/dit.py) and of the sibling modules it imports
(nets/layers.py), without docstrings or relative imports, then a subclass `TinyDiffusionNet(UNet, ModelMixin,
ConfigMixin)` whose config (config.json) holds the network's settings, so the weights keep their own names. The
export runs the generated network on the model's weights and refuses to write a folder whose network computes
anything else. (A network traced with torch.export would be a pickled program tied to the torch version that wrote
it, not safetensors weights.) The file is named by its content's hash and puts back the classes an earlier load of
it made: diffusers executes a custom component's file again at every load, after which the networks loaded earlier
would fail their own isinstance checks.

A latent model's folder has a third component, `vae`: its autoencoder's decoder, generated the same way from the
autoencoder's module in nets/ (only what its class needs: not its loader), with the decoder's weights, its licence,
and the same check; the pipeline undoes the run's standardisation (model_index.json holds the statistics) and
decodes at the end.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save, save_file

from ..autoencoders import licence_file, load_autoencoder
from ..checkpoint import DIFFUSERS_WEIGHTS, plain_state_dict
from ..distill_methods import DISTILL_METHODS
from ..errors import UserError
from ..export_formats import EXPORT_FORMATS, export_folder
from ..pipeline import Model, sampling_settings
from ..samplers import SAMPLERS
from .generated_code import check_generated, generated_module, needed_source

DIFFUSERS_VERSION = "0.42.1"  # written into the configs; the version the folder was tested with
PIPELINE_FILE = Path(__file__).with_name("diffusers_pipeline.py")  # shipped as the folder's pipeline.py
PIPELINE_CLASS, NETWORK_CLASS, AUTOENCODER_CLASS = "TinyDiffusionPipeline", "TinyDiffusionNet", "TinyDiffusionDecoder"
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}  # diffusers' names; others: pipeline_module

NETWORK_WRAPPER = '''

class {wrapper}({network}, ModelMixin, ConfigMixin):
    """The {network} as a diffusers model: forward(x, t, y=None, guidance=None) -> the network's output, for t the
    (possibly fractional) step index, y the class (num_classes: no class) and, for a distilled student, guidance
    the guidance scale. config.json holds the network's settings; the weights keep tinydiffusion's names."""

    @register_to_config
    def __init__(self, {parameters}):
        {network}.__init__(self, SimpleNamespace({arguments}))

    @property
    def config(self):
        return self._internal_dict

    @config.setter
    def config(self, value):
        """The network keeps its settings as self.config; diffusers' config, which holds the same, stands for them."""
'''

AUTOENCODER_WRAPPER = '''

class {wrapper}({autoencoder}, ModelMixin, ConfigMixin):
    """The {autoencoder}'s decoder alone as a diffusers model: decode(z) -> images in [-1, 1], for z the
    autoencoder's own latents (the pipeline undoes the run's standardisation first). The weights keep their names."""

    @register_to_config
    def __init__(self):
        {autoencoder}.__init__(self, encoder=False)
'''


def scheduler_config(model: Model, sampler: str) -> dict:
    """A stock diffusers scheduler on the model's betas that takes the steps tinydiffusion's sampler takes."""
    config = {"num_train_timesteps": model.diffusion.num_timesteps, "trained_betas": model.diffusion.betas.tolist(),
              "prediction_type": PREDICTION_TYPES.get(model.config.diffusion.objective, "sample"),
              "timestep_spacing": "trailing", "steps_offset": 0, "thresholding": False,
              "_diffusers_version": DIFFUSERS_VERSION}
    if float(model.diffusion.alphas_cumprod[-1]) == 0.0:  # DPM-Solver in diffusers cannot start where alpha = 0
        return {"_class_name": "DDIMScheduler", **config, "clip_sample": False, "set_alpha_to_one": True,
                "rescale_betas_zero_snr": False}
    return {"_class_name": "DPMSolverMultistepScheduler", **config, "algorithm_type": "dpmsolver++",
            "solver_order": SAMPLERS[sampler].diffusers_order, "solver_type": "midpoint", "lower_order_final": True,
            "euler_at_final": False, "final_sigmas_type": "zero", "use_karras_sigmas": False}


def check_network_code(model: Model, code: str) -> None:
    """Run the generated network on the model's weights: it must compute what the model's network does."""
    name, net_cfg = type(model.net).__name__, model.config.net
    device = next(model.net.parameters()).device  # the model's network stays where it is
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size, generator=generator)
    t = torch.tensor([3.0, 0.5]).clamp(max=model.diffusion.num_timesteps - 1)
    y = torch.tensor([0, net_cfg.num_classes]) if net_cfg.num_classes else None
    inputs = [v.to(device) if v is not None else None for v in (x, t, y)]
    inputs += [torch.tensor([1.0, 2.0], device=device)] if net_cfg.guidance_input else []

    def computes_the_same(namespace: dict) -> bool:
        generated = namespace[name](SimpleNamespace(**dataclasses.asdict(net_cfg)))
        generated.load_state_dict(model.net.state_dict())
        return torch.allclose(generated.to(device).eval()(*inputs), model.net(*inputs), atol=1e-6)

    check_generated(code, f"the {net_cfg.kind} network", computes_the_same)


def network_module(model: Model) -> tuple[str, str]:
    """(the module's name, its text): the network as a diffusers ModelMixin, checked against the model."""
    network_class, net_config = type(model.net), model.config.net
    files, imports, code = needed_source(network_class)
    check_network_code(model, "\n".join(imports) + "\n\n\n" + code)
    fields = dataclasses.fields(net_config)
    parameters = ", ".join(f"{f.name}: {type(getattr(net_config, f.name)).__name__} = {f.default!r}" for f in fields)
    arguments = ", ".join(f"{f.name}={f.name}" for f in fields)
    wrapper = NETWORK_WRAPPER.format(wrapper=NETWORK_CLASS, network=network_class.__name__, parameters=parameters,
                                     arguments=arguments)
    return generated_module(net_config.kind, f"{network_class.__name__} network ({net_config.kind})", files, imports,
                            code, wrapper)


def autoencoder_module(model: Model) -> tuple[str, str, dict[str, torch.Tensor]]:
    """(the module's name, its text, its weights): a latent model's autoencoder as a diffusers ModelMixin that builds
    its decoder alone (encoder=False), generated from the autoencoder's module, checked to decode as it does."""
    name, net_cfg = model.config.data.autoencoder, model.config.net
    autoencoder = load_autoencoder(name, "cpu")
    cls = type(autoencoder)
    files, imports, code = needed_source(cls)
    weights = {k: v for k, v in plain_state_dict(autoencoder).items() if k in cls(encoder=False).state_dict()}
    z = torch.randn(2, net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size,
                    generator=torch.Generator().manual_seed(0))

    def decodes_the_same(namespace: dict) -> bool:
        generated = namespace[cls.__name__](encoder=False)
        generated.load_state_dict(weights)
        return torch.allclose(generated.eval().decode(z), autoencoder.decode(z), atol=1e-6)

    check_generated("\n".join(imports) + "\n\n\n" + code, f"{name}'s decoder", decodes_the_same)
    wrapper = AUTOENCODER_WRAPPER.format(wrapper=AUTOENCODER_CLASS, autoencoder=cls.__name__)
    module, text = generated_module(name, f"{cls.__name__}, {name}'s decoder alone", files, imports, code, wrapper)
    return module, text, weights


def pipeline_module(model: Model) -> bytes:
    """The folder's pipeline.py: export/diffusers_pipeline.py and, for an objective diffusers has no name for, its class
    (from objectives/, as the network's code is made), whose x0 the pipeline hands the scheduler."""
    text, objective = PIPELINE_FILE.read_text(), type(model.diffusion.objective)
    if model.config.diffusion.objective not in PREDICTION_TYPES:
        _, imports, code = needed_source(objective)
        text += "\n\n" + "\n".join(imports) + "\n\n\n" + code + f"\n\n\nOBJECTIVE = {objective.__name__}()\n"
    return text.encode()


def pipeline_config(model: Model, network: str, scheduler: str, steps: int, guidance: float,
                    autoencoder: str | None = None) -> dict:
    """model_index.json: the pipeline, its components (a latent model's `vae`, the module `autoencoder`, with the
    run's latent statistics) and its settings."""
    student, data = model.config.distill, model.config.data
    # tinydiffusion's rule (pipeline.sampling_settings): a student whose steps land on its teacher's path samples
    # with those steps only; the pipeline refuses others, as generate() does.
    steps_fixed = bool(student.steps) and not DISTILL_METHODS[student.method].to_clean
    latent = {"vae": [autoencoder, AUTOENCODER_CLASS], "latent_mean": list(data.latent_mean),
              "latent_std": list(data.latent_std)} if autoencoder else {}
    return {"_class_name": ["pipeline", PIPELINE_CLASS], "_diffusers_version": DIFFUSERS_VERSION,
            "denoiser": [network, NETWORK_CLASS], "scheduler": ["diffusers", scheduler], **latent,
            "objective": model.config.diffusion.objective,
            "labels": {name: index for index, name in enumerate(model.class_names)},
            "steps": steps, "steps_fixed": steps_fixed, "guidance": guidance,
            "guidance_min": student.guidance_min if student.steps else None,
            "guidance_max": student.guidance_max if student.steps else None}


def as_json(value) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def autoencoder_files(model: Model) -> tuple[str | None, dict[str, bytes]]:
    """A latent model's `vae` component: (its module's name, its files: config, code, weights and the weights'
    licence); (None, {}) for a pixel model."""
    if not model.config.data.autoencoder:
        return None, {}
    module, text, weights = autoencoder_module(model)
    weights_file = DIFFUSERS_WEIGHTS.name
    licence, notice = licence_file(model.config.data.autoencoder, weights_file)
    return module, {"vae/config.json": as_json({"_class_name": AUTOENCODER_CLASS,
                                                 "_diffusers_version": DIFFUSERS_VERSION}),
                    f"vae/{module}.py": text.encode(), f"vae/{weights_file}": save(weights, {"format": "pt"}),
                    f"vae/{licence}": notice}


def folder_files(model: Model) -> dict[str, bytes]:
    """Every file of the folder but the network's weights, by its path in the folder."""
    if model.net is None:
        raise UserError(f"{model.source} holds no PyTorch network (an exported file); export its checkpoint instead.")
    sampler, steps, guidance = sampling_settings(model)
    if sampler not in EXPORT_FORMATS["diffusers"].samplers():
        raise UserError(f"this model samples with the {sampler} sampler, which no stock diffusers scheduler takes "
                        f"the same steps of; export it with --format onnx instead.")
    network, network_text = network_module(model)
    autoencoder, vae = autoencoder_files(model)
    scheduler = scheduler_config(model, sampler)
    config = model.config
    run = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=""))  # no local path
    net = {"_class_name": NETWORK_CLASS, "_diffusers_version": DIFFUSERS_VERSION, **dataclasses.asdict(config.net)}
    index = pipeline_config(model, network, scheduler["_class_name"], steps, guidance, autoencoder)
    return {
        "model_index.json": as_json(index),
        "pipeline.py": pipeline_module(model),
        "scheduler/scheduler_config.json": as_json(scheduler),
        "denoiser/config.json": as_json(net),
        f"denoiser/{network}.py": network_text.encode(),
        str(DIFFUSERS_WEIGHTS.with_suffix(".json")): run.to_json().encode(),
        **vae,
    }


def write_diffusers(model: Model, out: Path) -> str:
    """`export --format diffusers` (export_formats.py): the folder, written through export_formats.export_folder,
    and a phrase saying how to load it."""
    with export_folder(model, Path(out), "diffusers") as tmp:
        for relative, payload in folder_files(model).items():
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            (tmp / relative).write_bytes(payload)
        save_file(plain_state_dict(model.net), str(tmp / DIFFUSERS_WEIGHTS), metadata={"format": "pt"})
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    return (f"{out} ({size / 1e6:.1f} MB; a diffusers folder: DiffusionPipeline.from_pretrained({str(out)!r}, "
            "trust_remote_code=True))")
