"""The one home that builds a run's config: a new run's (a preset, or one chosen for the data, fitted to the data),
a resumed run's, and a student's. Each is built and validated here; the commands (cli/train.py, cli/distill.py) and
the benchmarks only call these. What the values are is presets.py's (the recipes) and config.py's (every field's
plain default); this module only puts them together, with the flags.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from .autoencoders import AUTOENCODERS
from .config import DataConfig, DistillConfig, RunConfig, apply_overrides, config_value
from .distill_methods import DISTILL_METHODS, check_trainable
from .errors import UserError
from .presets import NAMED_NETWORKS, PRESETS, STUDENT_GUIDANCE_LR, STUDENT_TRAIN, auto_config, get_preset

# What a new run is fitted to: (the images' shape C x H x W, the number of classes, the number of images)
DataFacts = tuple[tuple[int, int, int], int, int]
MIN_AUTO_STEPS = 2000  # a folder with no preset trains at least this long (5 epochs of a small folder is nothing)
# Colour images larger than this train in a pretrained autoencoder's latents by default (docs/reports/latent-taef2.md:
# at 64 and 128 px TAEF2's latents beat or tie pixels at equal minutes; 32 px and grey were not measured).
LATENT_ABOVE, DEFAULT_AUTOENCODER = 32, "taef2"


# --- a new run --------------------------------------------------------------------------------------------------

def preset_for_source(source: str) -> str:
    """The preset a `train --data SOURCE` without --preset starts from: the named dataset's own, or "auto"."""
    name = source.strip().lower()
    return name if name in PRESETS and PRESETS[name].data.source == name else "auto"


def chosen_autoencoder(preset: str, given: dict, data: DataConfig, start: RunConfig | None,
                       image_shape: tuple[int, ...]) -> str:
    """The autoencoder a new run chosen for its data (no preset, no --train.init, no --autoencoder) diffuses in:
    DEFAULT_AUTOENCODER for colour images larger than LATENT_ABOVE pixels whose sides it encodes, else none (pixel
    space). `--autoencoder none` asks for pixel space explicitly."""
    c, h, w = image_shape
    scale = AUTOENCODERS[DEFAULT_AUTOENCODER].downscale
    if preset != "auto" or start is not None or "data.autoencoder" in given or data.hflip:
        return ""
    return DEFAULT_AUTOENCODER if c == 3 and min(h, w) > LATENT_ABOVE and h % scale == w % scale == 0 else ""


def new_run(preset: str, net: str | None, given: dict, data: DataFacts | None = None,
            name: str | None = None, start: RunConfig | None = None) -> RunConfig:
    """A new run's config, validated: the preset (or "auto": one chosen for the images' size, named `name`), `--net`
    and the flags (`given`, dotted names), then the network fitted to the data. Without `data` it is the config
    before the data is read, so that every flag is checked before any work. `start`: the config of the run it
    starts from (train.init), whose network and process it takes unless --net names another."""
    auto = preset == "auto"
    if start is not None and start.data.autoencoder and "data.autoencoder" not in given:
        given = {**given, "data.autoencoder": start.data.autoencoder}  # a fine-tune diffuses where its start did
    reference = PRESETS["fashion-mnist"].net
    channels, size = data[0][:2] if data else (reference.in_channels, reference.image_size)
    latent = bool(data) and given.get("data.autoencoder", "") not in ("", "none")  # none: pixel space
    config = auto_config(size, channels, latent=latent) if auto \
        else preset_with_network(preset, net)
    if auto and net:
        config = with_network(config, net)
    if start is not None and not net:
        config = fine_tune_of(config, start)
    config = apply_overrides(config, given)
    if start is not None and config.data.autoencoder != start.data.autoencoder:
        raise UserError(f"--train.init starts from a run that diffuses in {space(start)}, so its network cannot learn "
                        f"in {space(config)}; drop --autoencoder, or train from scratch.")
    if data is not None:
        config = fit_to_data(config, *data, explicit=set(given), auto=auto)
    elif config.data.autoencoder in AUTOENCODERS and "net.in_channels" not in given:  # the latents' channels
        config = dataclasses.replace(config, net=dataclasses.replace(
            config.net, in_channels=AUTOENCODERS[config.data.autoencoder].latent_channels))
    if auto and name:
        config = dataclasses.replace(config, name=name)
    config.validate()
    return config


# What a fine-tune takes from its start besides the network: what the network's time input and output mean. The
# rest of the process (the log-SNR shift a larger image wants, the loss's weighting) is the recipe's for the data.
STARTED_PROCESS = ("schedule", "timesteps", "beta_start", "beta_end", "cosine_s", "zero_terminal_snr", "objective")


def fine_tune_of(config: RunConfig, start: RunConfig) -> RunConfig:
    """A run that starts from another (train.init): its network (fitted to the data later), and its process. A latent
    start's latents are standardised as they were for it, so the network's input means what it learned."""
    process = {name: getattr(start.diffusion, name) for name in STARTED_PROCESS}
    data = config.data
    if start.data.autoencoder:
        data = dataclasses.replace(data, latent_mean=start.data.latent_mean, latent_std=start.data.latent_std)
    return dataclasses.replace(config, net=start.net, data=data,
                               diffusion=dataclasses.replace(config.diffusion, **process))


def space(config: RunConfig) -> str:
    """Where a run diffuses, in words: "taef2's latent space" or "pixel space"."""
    return f"{config.data.autoencoder}'s latent space" if config.data.autoencoder else "pixel space"


def with_network(config: RunConfig, name: str) -> RunConfig:
    """Swap in a named network ("unet", "dit", "dit-s", "dit-b"), keeping the data's shape and classes."""
    if name not in NAMED_NETWORKS:
        raise UserError(f"unknown network {name!r}; choose one of {', '.join(NAMED_NETWORKS)}.")
    net = dataclasses.replace(NAMED_NETWORKS[name], image_size=config.net.image_size,
                              in_channels=config.net.in_channels, num_classes=config.net.num_classes)
    return dataclasses.replace(config, net=net)


def preset_with_network(preset: str, net: str | None) -> RunConfig:
    """A preset with `--net`'s network swapped in. The reference run with its Transformer is the
    fashion-mnist-dit preset (its learning rate suits the Transformer), whichever alias names the net."""
    config = get_preset(preset)
    if net is None:
        return config
    config = with_network(config, net)
    if preset == "fashion-mnist" and config.net == PRESETS["fashion-mnist-dit"].net:
        return get_preset("fashion-mnist-dit")
    return config


def fit_to_data(config: RunConfig, image_shape: tuple[int, int, int], num_classes: int, num_images: int,
                explicit: set[str], auto: bool = False) -> RunConfig:
    """Give the network the data's shape and classes (unless a flag set them explicitly); an auto config also
    trains for at least MIN_AUTO_STEPS steps, in batches no larger than the data."""
    channels, size, _ = image_shape
    facts = {"net.in_channels": channels, "net.image_size": size, "net.num_classes": num_classes}
    net = dataclasses.replace(config.net, **{k.split(".")[1]: v for k, v in facts.items() if k not in explicit})
    net = net.fitted_to_size(explicit)  # e.g. DiT patches that tile the new size
    train = config.train
    if auto and "train.batch_size" not in explicit and num_images < train.batch_size:  # a small folder: one batch
        train = dataclasses.replace(train, batch_size=max(1, num_images))
    if auto and "train.epochs" not in explicit and "train.max_steps" not in explicit:
        steps_per_epoch = max(1, num_images // train.batch_size)
        train = dataclasses.replace(train, epochs=max(train.epochs, math.ceil(MIN_AUTO_STEPS / steps_per_epoch)))
    return dataclasses.replace(config, net=net, train=train)


# --- a resumed run ----------------------------------------------------------------------------------------------

def resumed_run(saved: RunConfig, given: dict) -> tuple[RunConfig, list[str]]:
    """A resumed run's config, validated: its saved config with the flags that may change (the train section's)
    applied, and what they changed ("train.lr = 0.001 (was 0.002)"); a flag that would be ignored is refused, and so is
    a student of a removed distillation method (distill_methods.py)."""
    if given.get("train.init"):
        raise UserError("--train.init does not apply to --resume (a resumed run continues from its own checkpoint); "
                        "drop it.")
    check_trainable(saved.distill.method)
    config = apply_overrides(saved, given)
    if config.net != saved.net or config.diffusion != saved.diffusion or config.distill != saved.distill:
        raise UserError("a resumed run keeps its network, diffusion and distillation settings; "
                        "start a new --run-dir to change them.")
    config.validate()
    changed = [f"{k} = {config_value(config, k)} (was {config_value(saved, k)})" for k in sorted(given)
               if config_value(config, k) != config_value(saved, k)]
    return config, changed


# --- a student --------------------------------------------------------------------------------------------------

def student_run(teacher: RunConfig, teacher_weights: Path, teacher_sha256: str, given: dict) -> RunConfig:
    """A student's config, validated: its teacher's network (taking the guidance scale, for a class-conditional
    teacher), process and data, the student's recipe (presets.STUDENT_TRAIN, and STUDENT_GUIDANCE_LR for a guidance
    embedding that starts at zero), what it is distilled from, and the flags; its sampler follows from the method (a
    removed one is refused).

    A trajectory student may teach: the new student then shortcuts its K DDIM steps (by default in K // 2 steps, a
    round of progressive distillation) over the guidance scales it learned."""
    taught = teacher.distill  # the teacher's own distillation, if it is a student
    if taught.steps and taught.method != "trajectory":
        raise UserError(f"{teacher_weights} is a {taught.method} student, whose steps are not a path to shortcut; "
                        f"distill from a trajectory student or from its teacher ({taught.teacher}).")
    net = dataclasses.replace(teacher.net, guidance_input=teacher.net.num_classes > 0)
    data = dataclasses.replace(teacher.data, prepared_sha256="")  # the student records the data it is given
    distill = DistillConfig(teacher=str(Path(teacher_weights).resolve()), steps=4, teacher_sha256=teacher_sha256)
    if taught.steps:
        distill = dataclasses.replace(distill, steps=max(1, taught.steps // 2), teacher_sampler="ddim",
                                      teacher_steps=taught.steps, guidance_min=taught.guidance_min,
                                      guidance_max=taught.guidance_max)
    if teacher.net.num_classes == 0:  # no guidance to fold in
        distill = dataclasses.replace(distill, guidance_min=1.0, guidance_max=1.0)
    train = dataclasses.replace(STUDENT_TRAIN, seed=teacher.train.seed)
    name = teacher.name.rsplit("-student-", 1)[0] if taught.steps else teacher.name
    config = apply_overrides(RunConfig(name=name, net=net, diffusion=teacher.diffusion, train=train, data=data,
                                       distill=distill), given)
    check_trainable(config.distill.method)
    if taught.steps:
        check_student_teacher(config.distill, taught, teacher_weights)
    method = DISTILL_METHODS.get(config.distill.method)
    distill = dataclasses.replace(config.distill, sampler=method.student_sampler if method else "")
    if distill.init:
        distill = dataclasses.replace(distill, init=str(Path(distill.init).resolve()))
    # Only a guidance embedding that starts at zero needs its own rate: one from a student teacher or from
    # distill.init has learned already.
    if "distill.guidance_lr" not in given and net.guidance_input and not taught.steps and not distill.init:
        distill = dataclasses.replace(distill, guidance_lr=STUDENT_GUIDANCE_LR)
    config = dataclasses.replace(config, name=f"{name}-student-{distill.steps}", distill=distill)
    config.validate()
    return config


def check_student_teacher(distill: DistillConfig, taught: DistillConfig, teacher_weights: Path) -> None:
    """A student teacher has only its own K DDIM steps and the guidance scales it learned: refuse, in one sentence,
    a distillation that asks it for more."""
    where = f"{teacher_weights} is a {taught.steps}-step student"
    if (distill.teacher_sampler, distill.teacher_steps) != ("ddim", taught.steps):
        raise UserError(f"{where} and walks only its own {taught.steps} DDIM steps; drop --distill.teacher_sampler "
                        "and --distill.teacher_steps.")
    if distill.steps >= taught.steps:
        raise UserError(f"{where}; its student must take fewer steps (--steps).")
    if not taught.guidance_min <= distill.guidance_min <= distill.guidance_max <= taught.guidance_max:
        raise UserError(f"{where} that learned guidance scales from {taught.guidance_min:g} to "
                        f"{taught.guidance_max:g}; keep --distill.guidance_min and --distill.guidance_max within "
                        "them.")


def student_defaults() -> RunConfig:
    """The config whose train section `distill --help` shows as its defaults (a fine-tuning's)."""
    return RunConfig(train=STUDENT_TRAIN)

