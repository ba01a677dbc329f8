"""The short public API: load a trained model and generate images with any sampler.

    model = load_model()                       # the bundled Fashion-MNIST model
    images, labels = generate(model, 16, classes=[7] * 16, sampler="dpmpp-2m", steps=20)
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .autoencoders import decode
from .bounds import MAX_SEED
from .bundled import DEFAULT_MODEL, bundled, bundled_file
from .checkpoint import build_and_load, first_non_finite, load_config, resolve_checkpoint
from .config import RunConfig
from .data import NAMED, class_aliases, class_index
from .data.pixels import to_pixels
from .defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from .devices import memory_of, pick_device  # noqa: F401  (public here too)
from .diffusion import GaussianDiffusion
from .distill_methods import DISTILL_METHODS
from .errors import UserError
from .nets.memory import activation_bytes, format_bytes
from .samplers import check_sampler_options, get_sampler
from .samplers.denoiser import Denoiser


@dataclass
class Model:
    net: torch.nn.Module
    diffusion: GaussianDiffusion
    config: RunConfig
    source: Path
    graph: object | None = None  # an exported graph run instead of `net`, by its `denoiser` and `decode` (OnnxGraph)

    @property
    def device(self) -> torch.device:
        """Where images are made: the network's device; the CPU for a model read from an exported file alone."""
        return torch.device("cpu") if self.net is None else next(self.net.parameters()).device

    @property
    def num_classes(self) -> int:
        return self.config.net.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of the classes the model was trained on (numbers where a run did not record them)."""
        if self.num_classes == 0:
            return ()
        named = NAMED.get(self.config.data.source)
        names = self.config.data.class_names or (named.class_names if named else ())
        return tuple(names) if len(names) == self.num_classes else tuple(str(i) for i in range(self.num_classes))

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """What the sampler ended on -> images in [-1, 1]: a latent model's decoded, by its exported graph's decoder
        where it runs one (`graph`), else by the autoencoder (autoencoders.decode); a pixel model's as they are."""
        return decode(self.config.data, x0) if self.graph is None else self.graph.decode(x0)

    def class_index(self, name_or_index: str) -> int:
        """A class by its name (as the model's data named it) or index; one sentence if there is none."""
        return class_index(name_or_index, self.class_names, class_aliases(self.config.data.source))


def load_model(checkpoint: str | Path | None = None, device: str = "auto") -> Model:
    """Rebuild the network from the config stored beside the weights, and load the (EMA) weights. `checkpoint`: a
    run, a checkpoint or a .safetensors file, or a bundled model's name ("fashion-mnist", the default, "emoji")."""
    weights_path, config_path = resolve_checkpoint(checkpoint)
    config = load_config(config_path)
    net = build_and_load(config.net, weights_path)
    broken = first_non_finite(net.state_dict())
    if broken:
        raise UserError(f"{weights_path} holds weights that are not finite (NaN or infinity, e.g. {broken}); "
                        "the training that wrote them diverged, so use an earlier checkpoint.")
    net.eval().to(pick_device(device))
    return Model(net, GaussianDiffusion(config.diffusion), config, weights_path)


def load_student(steps: int = 4, device: str = "auto", model: str = DEFAULT_MODEL) -> Model:
    """A bundled model's distilled student (`sample --fast --steps`; the fashion-mnist model has students of 1, 2 and
    4 steps): generate() draws with it in that many network evaluations, guidance folded in."""
    chosen = bundled(model)
    if isinstance(steps, str) or steps not in chosen.students:  # "4" is not 4: refused as itself, quoted
        choices = ", ".join(map(str, sorted(chosen.students)))
        raise UserError(f"a bundled {chosen.name} student's steps must be an integer, one of {choices}, not "
                        f"{steps!r}.")
    return load_model(chosen.student(steps), device)


def integer(value, what: str, kind: str = "an integer") -> int:
    """An integer argument of the API (int, numpy or torch integer); anything else, "4" included, is one sentence
    instead of a TypeError from the first comparison."""
    try:
        return operator.index(value)
    except TypeError:
        raise UserError(f"{what} must be {kind}, not {value!r}.") from None


def teacher_of(model: Model) -> str:
    """Where a student's teacher is now, for a refusal to point at: the bundled model or student the bundled students
    were distilled from (recorded by file name alone, as no path of the machine that made them holds here, nor
    beside a copy or an exported .onnx of them), else the path recorded, said to be missing when it is."""
    recorded = model.config.distill.teacher
    found = bundled_file(Path(recorded.split(" ")[0]))
    if not found:
        return recorded if Path(recorded).exists() else f"{recorded}, which is not found here"
    teacher, steps = found
    named = teacher.name != DEFAULT_MODEL  # the default model needs no name
    flag, name_arg = (f" --model {teacher.name}", repr(teacher.name)) if named else ("", "")
    if steps is None:
        return f"the bundled {teacher.name} model: `tinydiffusion sample{flag}`, or load_model({name_arg})"
    return f"the bundled {steps}-step student: `tinydiffusion sample{flag} --fast --steps {steps}`, or " \
           f"load_student({steps}{', model=' + name_arg if named else ''})"


def resolve_labels(model: Model, num: int, classes: list[int | str] | None) -> torch.Tensor | None:
    """Labels for `num` samples: the requested classes (indices or names, as `sample --class` takes) cycled, every
    class in turn, or None."""
    if classes is not None and (isinstance(classes, str) or np.ndim(classes) == 0):  # one class alone, not a list
        classes = [classes]
    if model.num_classes == 0:
        if classes is not None and len(classes):
            raise UserError("this model is unconditional; it cannot generate a requested class (drop --class).")
        return None
    classes = [model.class_index(c) if isinstance(c, str) else integer(c, "a class", "a name or an integer index")
               for c in (classes if classes is not None else ())] or list(range(model.num_classes))
    for c in classes:
        if not 0 <= c < model.num_classes:
            raise UserError(f"class {c} is out of range for a model of {model.num_classes} classes.")
    return torch.tensor(classes, dtype=torch.long)[torch.arange(num) % len(classes)]


def check_memory(model: Model, num: int, batch_size: int, guided: bool, device: torch.device) -> None:
    """Refuse, before anything is allocated, a run whose batches or outputs cannot fit in memory."""
    net_cfg = model.config.net
    image_bytes = net_cfg.in_channels * net_cfg.image_size**2
    batch = min(batch_size, num)
    activations = activation_bytes(net_cfg, batch * (2 if guided else 1))  # guidance runs both halves at once
    outputs = 2 * num * image_bytes  # the uint8 batches, then their concatenation
    available = memory_of(device)
    if activations + outputs > available:
        fits = max(0, (available - outputs) // max(1, activation_bytes(net_cfg, 2 if guided else 1)))
        advice = f"lower --batch-size (about {fits:,} fit)" if fits >= 1 else "lower --num"
        raise UserError(f"{num:,} images of {net_cfg.in_channels}x{net_cfg.image_size}x{net_cfg.image_size} in "
                        f"batches of {batch:,} need about {format_bytes(activations + outputs)}, more than the "
                        f"{format_bytes(available)} of memory on {device}; {advice}.")


def sampling_settings(model: Model, sampler: str | None = None, steps: int | None = None,
                      guidance: float | None = None, options: dict | None = None) -> tuple[str, int, float]:
    """(sampler, steps, guidance) as they will be used: those given, else the defaults (defaults.py; the steps the
    sampler's entry declares). A distilled student samples with the sampler and steps it was distilled for, and at a
    guidance scale it learned."""
    student = model.config.distill
    if student.steps:  # a consistency student takes any number of steps; a trajectory student only its own
        any_steps = DISTILL_METHODS[student.method].to_clean
        if sampler not in (None, student.sampler) or (steps not in (None, student.steps) and not any_steps) or options:
            takes = f"{student.sampler} steps, any number" if any_steps else (
                f"{student.steps} {student.sampler} step{'s' if student.steps > 1 else ''}")
            raise UserError(f"this model is a student distilled to sample with {takes}, the only way it samples; "
                            f"drop --sampler{'' if any_steps else ', --steps'} and sampler options, or sample its "
                            f"teacher ({teacher_of(model)}) for other settings.")
        sampler, steps = student.sampler, steps or student.steps
    sampler = sampler or DEFAULT_SAMPLER
    own_steps, T = get_sampler(sampler).default_steps, model.diffusion.num_timesteps
    steps = steps if steps is not None else min(own_steps or T, T)  # a default fits any model's T
    if guidance is None:  # 1: no guidance, for an unconditional model
        guidance = DEFAULT_GUIDANCE if model.num_classes else 1.0
    if student.steps and model.num_classes and not student.guidance_min <= guidance <= student.guidance_max:
        raise UserError(f"this student learned guidance scales from {student.guidance_min:g} to "
                        f"{student.guidance_max:g}, not {guidance}; choose one in that range.")
    return sampler, steps, guidance


def checked_settings(model: Model, sampler: str | None, steps: int | None, guidance: float | None, seed: int,
                     options: dict) -> tuple[str, int, float]:
    """sampling_settings(), each checked: what generate() and the editing functions (editing/) sample with."""
    steps, seed = None if steps is None else integer(steps, "the number of steps"), integer(seed, "the seed")
    if isinstance(guidance, str):
        raise UserError(f"the guidance scale must be a number, not {guidance!r}.")
    sampler, steps, guidance = sampling_settings(model, sampler, steps, guidance, options)
    check_sampler_options(sampler, options)
    if not 1 <= steps <= model.diffusion.num_timesteps:
        raise UserError(f"--steps must be between 1 and {model.diffusion.num_timesteps} (the model's T), not {steps}.")
    if not (math.isfinite(guidance) and guidance >= 0):
        raise UserError(f"the guidance scale must be a finite number, 0 or more, not {guidance}.")
    if guidance != 1.0 and model.num_classes == 0:
        raise UserError("guidance needs a class-conditional model; this one is unconditional.")
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"the seed must be between 0 and 2**63 - 1, not {seed}.")
    return sampler, steps, guidance


def start_noise(model: Model, seed: int, first: int, count: int) -> tuple[torch.Tensor, list[torch.Generator]]:
    """The starting noise of images first .. first + count - 1 of a seed, and their generators (which go on to
    draw a stochastic sampler's noise): one per image, seeded from (seed, the image's index) through numpy's
    SeedSequence, which makes the streams independent. Image i's noise is then the same whatever batch it is drawn
    in, so --batch-size changes the memory used, not the images."""
    net_cfg, device = model.config.net, model.device
    shape = (net_cfg.in_channels, net_cfg.image_size, net_cfg.image_size)
    generators = []
    for index in range(first, first + count):
        state = np.random.SeedSequence((seed, index)).generate_state(1, np.uint64)[0]
        generators.append(torch.Generator(device=device).manual_seed(int(state)))
    return torch.stack([torch.randn(shape, generator=g, device=device) for g in generators]), generators


def denoiser(model: Model, labels: torch.Tensor | None, guidance: float | torch.Tensor,
             guide: Model | None = None) -> Denoiser:
    """The model's network as the samplers call it, for these labels (on the network's device) and guidance, by
    `guide` (autoguidance) or else by its own unconditional half; an exported graph (model.graph) brings the
    Denoiser that runs it."""
    net_cfg = model.config.net
    kind, net = (Denoiser, model.net) if model.graph is None else (model.graph.denoiser, model.graph)
    weak = None if guide is None else denoiser(guide, labels, 1.0)
    return kind(net, model.diffusion, None if labels is None else labels.to(model.device), guidance,
                null_class=net_cfg.num_classes, guidance_input=net_cfg.guidance_input, guide=weak)


def check_guide(model: Model, guide: Model) -> None:
    """Autoguidance needs a guide that denoises the same images on the same process: the same image shape and
    classes, the same noise at each step (schedule, steps and shift), and neither a student (whose guidance is
    folded in)."""
    mine, theirs = model.config, guide.config
    if mine.net.guidance_input or theirs.net.guidance_input:
        raise UserError("a distilled student folds its guidance in, so it neither takes a guide nor guides "
                        "(--guide); guide its teacher, or drop --guide.")
    my_shape, its_shape = (f"{c.net.in_channels}x{c.net.image_size}x{c.net.image_size}" for c in (mine, theirs))
    if (its_shape, guide.class_names) != (my_shape, model.class_names):
        raise UserError("the guide (--guide) must draw the model's images: the same shape and classes "
                        f"({my_shape}, {len(model.class_names)} classes), not {its_shape} and "
                        f"{len(guide.class_names)}.")
    process = ("schedule", "timesteps", "logsnr_shift")
    if any(getattr(mine.diffusion, k) != getattr(theirs.diffusion, k) for k in process):
        raise UserError("the guide (--guide) must be trained on the model's noise process (the same diffusion "
                        "schedule, timesteps and shift), so that both are asked about the same noise at each step.")


def check_finite(x0: torch.Tensor, sampler: str, steps: int, guidance: float, options: dict) -> None:
    """A result that is not finite is an error, never a black image."""
    if not torch.isfinite(x0).all():
        settings = "".join(f", {key} {value}" for key, value in options.items())
        raise UserError(f"sampling gave values that are not finite (NaN or infinity) with {sampler}, "
                        f"{steps} steps, guidance {guidance}{settings}; these settings or the model's "
                        "weights are broken, so no image was written.")


def generate(model: Model, num: int, *, classes: list[int | str] | None = None, sampler: str | None = None,
             steps: int | None = None, guidance: float | None = None, seed: int = 0, batch_size: int = 500,
             progress: bool = False, callback=None, guide: Model | None = None,
             **sampler_options) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generate `num` images; returns (uint8 [N, C, H, W], labels [N] or None). With `guide` (autoguidance: a
    weaker version of the model, e.g. an early checkpoint of its run) `guidance` pushes away from the guide's
    prediction instead of the unconditional one.

    Each image's noise comes from its own generator seeded from (seed, index), so a seed gives the same
    images at any batch size. A result that is not finite is an error, never a black image. What is not
    given (sampler, its steps, the guidance) is the model's default: sampling_settings.
    """
    sampler, steps, guidance = checked_settings(model, sampler, steps, guidance, seed, sampler_options)
    num, batch_size = integer(num, "the number of images"), integer(batch_size, "the batch size")
    if num < 1 or batch_size < 1:
        raise UserError(f"the number of images and the batch size must be at least 1, not {num} and {batch_size}.")
    if guide is not None:
        check_guide(model, guide)
    guided_twice = guidance != 1.0 and not model.config.net.guidance_input  # both halves in one batch
    check_memory(model, num, batch_size, guided=guided_twice, device=model.device)
    labels = resolve_labels(model, num, classes)
    sample_fn = get_sampler(sampler)
    images = []
    with tqdm(total=num, desc=f"sampling ({sampler}, {steps} steps)", unit="img", disable=not progress) as bar:
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            noise, generators = start_noise(model, seed, start, n)
            denoise = denoiser(model, labels[start:start + n] if labels is not None else None, guidance, guide)
            x0 = sample_fn(denoise, noise, model.diffusion, steps, callback=callback, generator=generators,
                           **sampler_options)
            check_finite(x0, sampler, steps, guidance, sampler_options)
            images.append(to_pixels(model.decode(x0)).cpu())  # a latent model's decoded
            bar.update(n)
    return torch.cat(images), labels
