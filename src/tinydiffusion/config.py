"""Typed run configuration, saved as JSON beside the weights.

A run is described by one `RunConfig` made of its sections. Every field can be overridden
from the command line as `--section.field VALUE` (e.g. `--net.base_channels 48`).

Where defaults live, one home each:
    config.py (here)  every field of a run and its plain default, and the checks beside it
    presets.py        named starting configurations (`--preset`): the runs this project recommends and measured
    defaults.py       what sampling and distilling do when not told (sampler, steps, guidance, the student's recipe)
    bounds.py         the bounds any value may take (seeds, guidance, steps), shared by config, CLI and demo
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .autoencoders import AUTOENCODERS
from .bounds import MAX_GUIDANCE, MAX_LOGSNR_SHIFT, MAX_OPTIMIZER_STEPS, MAX_TIMESTEPS, MAX_TRAIN_SEED
from .distill_methods import DISTILL_METHODS
from .errors import UserError
from .fields import choices_help, option, recorded
from .loss_weighting import LOSS_WEIGHTINGS
from .nets import NETWORKS, NetConfig, UNetConfig, network_config
from .nets.base import MAX_IMAGE_SIZE
from .objectives import OBJECTIVES
from .samplers import teacher_samplers
from .schedules import SCHEDULES
from .timestep_sampling import TIMESTEP_SAMPLINGS

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Bumped when the on-disk layout of configs or checkpoints changes incompatibly.
# 2: `data.dataset` became `data.source`, and a run records the data it was trained on.
FORMAT_VERSION = 2

# Fields that a config.json of an older run may still hold, of features since removed: read and dropped, so that
# such a run still loads. Nothing writes them.
RETIRED_FIELDS = {
    "distill": ("critic_lr", "critic_warmup"),  # the dmd method's (distill_methods.py)
    "train": ("cuda_graph",),  # the CUDA-graph step's, removed in issue 47: compile_mode reduce-overhead does its job
}

# Bounds on what a config may ask for are bounds.py's; a config.json is untrusted input.
MAX_CONFIG_BYTES = 1 << 20
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


@dataclass
class DiffusionConfig:
    schedule: str = option("cosine", f"noise schedule: {choices_help(SCHEDULES)}")
    timesteps: int = option(1000, "T, the number of steps of the forward process")
    beta_start: float = option(1e-4, "linear schedule: the first beta")
    beta_end: float = option(0.02, "linear schedule: the last beta")
    cosine_s: float = option(0.008, "cosine schedule: the offset s")
    zero_terminal_snr: bool = option(False, "rescale so x_T is pure noise (Lin et al. 2023; needs objective v or x0)")
    logsnr_shift: float = option(0.0, "add this to the log-SNR of every step; negative is noisier, as larger images "
                                 "need (Hoogeboom et al. 2023: 2 ln(32 / size) for a schedule tuned at 32 pixels)")
    objective: str = option("eps", f"what the network predicts: {', '.join(OBJECTIVES)} (objectives/)")
    loss_weighting: str = option("none", f"how the loss weights each noise level: {choices_help(LOSS_WEIGHTINGS)}")
    min_snr_gamma: float = option(5.0, "min-snr: the SNR at which the weight is capped")
    timestep_sampling: str = option("uniform", f"how training draws t: {choices_help(TIMESTEP_SAMPLINGS)}")
    logit_mean: float = option(0.0, "logit-normal: the mean of the logit of t / T")
    logit_std: float = option(1.0, "logit-normal: the standard deviation of the logit of t / T")
    lognormal_mean: float = option(-1.2, "log-normal: the mean of log(sigma / alpha) (EDM's P_mean)")
    lognormal_std: float = option(1.2, "log-normal: the standard deviation of log(sigma / alpha) (EDM's P_std)")

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs that a valid diffusion section satisfies."""
        objective, schedule = OBJECTIVES.get(self.objective), SCHEDULES.get(self.schedule)
        reach_zero_snr = " and ".join(f"the {name} schedule" for name, s in SCHEDULES.items() if s.reaches_zero_snr)
        return [
            (schedule is not None, f"diffusion.schedule must be one of {', '.join(SCHEDULES)}, "
             f"not {self.schedule!r}"),
            (2 <= self.timesteps <= MAX_TIMESTEPS, f"diffusion.timesteps must be between 2 and {MAX_TIMESTEPS:,}"),
            (objective is not None, f"diffusion.objective must be one of {', '.join(OBJECTIVES)}, "
             f"not {self.objective!r}"),
            (objective is None or objective.defined_at_zero_snr
             or not (self.zero_terminal_snr or (schedule is not None and schedule.reaches_zero_snr)),
             f"diffusion.zero_terminal_snr and {reach_zero_snr} reach SNR 0, where objective "
             f"{self.objective} is undefined; use v, x0 or flow"),
            (self.timestep_sampling in TIMESTEP_SAMPLINGS,
             f"diffusion.timestep_sampling must be one of {', '.join(TIMESTEP_SAMPLINGS)}"),
            (self.logit_std > 0 and self.lognormal_std > 0,
             "diffusion.logit_std and diffusion.lognormal_std must be positive"),
            (self.loss_weighting in LOSS_WEIGHTINGS,
             f"diffusion.loss_weighting must be {' or '.join(repr(name) for name in LOSS_WEIGHTINGS)}"),
            (0 < self.beta_start < self.beta_end < 1, "need 0 < diffusion.beta_start < diffusion.beta_end < 1"),
            (0 <= self.cosine_s <= 1, "diffusion.cosine_s must be between 0 and 1"),
            (abs(self.logsnr_shift) <= MAX_LOGSNR_SHIFT,
             f"diffusion.logsnr_shift must be between -{MAX_LOGSNR_SHIFT:g} and {MAX_LOGSNR_SHIFT:g}"),
            (self.min_snr_gamma > 0, "diffusion.min_snr_gamma must be positive"),
        ]


@dataclass
class TrainConfig:
    epochs: int = option(5, "passes over the data")
    max_steps: int = option(0, "stop after this many optimizer steps (0: epochs decide)")
    max_seconds: float = option(0.0, "a time budget in seconds: the run times its steps up to the share "
                                "train.decay_from of the budget and plans its step count, learning-rate decay and EMA "
                                "to end then (with max_steps set: only a limit that cuts the run short); 0: none")
    minutes: float = option(0.0, "the time budget in minutes (the same as max_seconds = 60 x minutes); 0: none")
    decay_from: float = option(0.5, "the share of a time budget spent at the peak learning rate, timing the steps, "
                               "before the plan fixes the step count and the decay begins (0.1 to 0.9)")
    batch_size: int = option(128, "global batch, split across processes")
    lr: float = option(2e-3, "peak learning rate of AdamW")
    lr_schedule: str = option("cosine", "constant, or cosine (decays to lr * min_lr_ratio)")
    min_lr_ratio: float = option(0.1, "the cosine schedule's final learning rate as a fraction of lr (0 to 1)")
    warmup_steps: int = option(100, "steps of linear learning-rate warm-up")
    weight_decay: float = option(0.0, "AdamW's weight decay")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    ema_decay: float = option(0.999, "decay of the exponential moving average of the weights (0 to 1)")
    ema_std: float = option(0.0, "a power-function EMA instead (Karras et al. 2024): its width as a fraction of the "
                            "steps so far, e.g. 0.1; it averages over the same share of any run's length (0: off)")
    label_dropout: float = option(0.1, "probability of dropping the class, for classifier-free guidance "
                                  "(Ho & Salimans 2022)")
    class_balance: float = option(0.0, "draw the rarer classes more often: a class of n images in proportion to "
                                  "n ** (1 - X); 0: as the data has them, 1: every class equally often")
    init: str = option("", "start the network from a bundled model (emoji, fashion-mnist) or another run's EMA "
                       "weights (a run directory, checkpoint or .safetensors file), instead of from the seed: "
                       "fine-tuning. The run takes the start's network, schedule and objective, and its latent "
                       "space if it has one; a UNet's weights fit any image size, and other class names get a fresh "
                       "class table")
    seed: int = option(0, "seed of every random draw in training")
    log_every: int = option(50, "steps between lines of metrics.jsonl")
    checkpoint_every: int = option(0, "steps between checkpoints (0: at every report: see sample_every)")
    keep: int = option(2, "how many checkpoints to keep")
    on_nan: str = option("stop", "a non-finite loss: stop, or skip the step")
    sample_every: int = option(0, "steps between reports (a checkpoint, a grid of EMA samples, an FD if eval_every "
                               "says so); 0: at epoch ends, epochs shorter than 200 steps grouped; always at the end")
    sample_every_epoch: bool = option(True, "write a grid of EMA samples at every report")
    sample_num: int = option(36, "images in each epoch's grid")
    sample_steps: int = option(25, "DDIM steps for each epoch's grid")
    eval_every: int = option(0, "epochs between FDs of eval_num EMA samples in metrics.jsonl, at the report that "
                             "passes each such epoch (0: never)")
    eval_num: int = option(500, "samples per such FD (noisy and biased upwards at this N: for trends only)")
    tensorboard: bool = option(False, "also log to RUN_DIR/tensorboard (pip install 'tinydiffusion[tensorboard]')")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "auto, fp32 or bf16 (autocast)")
    compile: str = option("auto", "torch.compile the network: auto, on or off")
    compile_mode: str = option("default", f"torch.compile's mode: {', '.join(COMPILE_MODES)}")
    channels_last: str = option("auto", "channels-last memory format: auto, on or off")
    fused_adamw: str = option("auto", "AdamW's single-kernel implementation: auto, on or off")
    threads: int = option(0, "CPU threads for torch (0: torch's default)")
    planned_steps: int = recorded(0, "the step count a time budget planned (0: none planned yet)")
    planned_at: int = recorded(0, "the step the learning rate's decay is anchored at (where it was planned)")
    planned_warmup: int = recorded(0, "a warm-up the time budget shortened to fit inside its plan (0: warmup_steps)")

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs that a valid train section satisfies."""
        switches, most = ("auto", "on", "off"), MAX_OPTIMIZER_STEPS
        return [
            (self.epochs >= 1 or self.max_steps >= 1, "train.epochs must be at least 1"),
            (0 <= self.epochs <= MAX_OPTIMIZER_STEPS, "train.epochs must not be negative"),
            (0 <= self.max_steps <= most, f"train.max_steps must be 0 (no limit) or up to {most:.0e}"),
            (1 <= self.batch_size <= 1 << 20, "train.batch_size must be between 1 and 1,048,576"),
            (0 < self.lr <= 1, "train.lr must be above 0 and at most 1"),
            (self.lr_schedule in ("constant", "cosine"), "train.lr_schedule must be 'constant' or 'cosine'"),
            (0.1 <= self.decay_from <= 0.9, "train.decay_from must be between 0.1 and 0.9 (a share of the budget)"),
            (0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio must be between 0 and 1 (a fraction of train.lr)"),
            (self.weight_decay >= 0 and self.grad_clip >= 0,
             "train.weight_decay and train.grad_clip must not be negative"),
            (0.0 <= self.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
            (0.0 <= self.label_dropout < 1.0, "train.label_dropout must be in [0, 1)"),
            (0.0 <= self.class_balance <= 1.0, "train.class_balance must be between 0 and 1"),
            (0 <= self.seed <= MAX_TRAIN_SEED, f"train.seed must be between 0 and {MAX_TRAIN_SEED}"),
            (1 <= self.log_every <= MAX_OPTIMIZER_STEPS, "train.log_every must be at least 1"),
            (0 <= self.warmup_steps <= MAX_OPTIMIZER_STEPS and 0 <= self.checkpoint_every <= MAX_OPTIMIZER_STEPS,
             "step counts must not be negative"),
            (self.max_seconds >= 0 and self.minutes >= 0, "train.max_seconds and train.minutes must be 0 (no budget) "
             "or positive"),
            (not (self.max_seconds and self.minutes) or math.isclose(self.max_seconds, 60 * self.minutes),
             "set the time budget once: train.minutes or train.max_seconds"),
            (self.ema_std == 0 or 0.001 <= self.ema_std <= 0.28,
             "train.ema_std must be 0 (off) or between 0.001 and 0.28"),
            (0 <= self.sample_every <= most, "train.sample_every must be 0 (at epoch ends) or a number of steps"),
            (0 <= self.planned_at <= self.planned_steps <= most and 0 <= self.planned_warmup <= most,
             f"the recorded time-budget plan (train.planned_steps {self.planned_steps}, planned_at "
             f"{self.planned_at}) is not a plan: planned_at must not pass planned_steps; the run's config.json is "
             "damaged"),
            (1 <= self.keep <= 1000, "train.keep must be between 1 and 1000"),
            (self.on_nan in ("stop", "skip"), "train.on_nan must be 'stop' or 'skip'"),
            (DEVICE_PATTERN.fullmatch(self.device) is not None, f"train.device must be auto, cpu, cuda or cuda:N, "
             f"not {self.device!r}"),
            (self.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16"),
            (self.compile in switches, "train.compile must be auto, on or off"),
            (self.channels_last in switches, "train.channels_last must be auto, on or off"),
            (self.fused_adamw in switches, "train.fused_adamw must be auto, on or off"),
            (self.compile_mode in COMPILE_MODES, f"train.compile_mode must be one of {', '.join(COMPILE_MODES)}"),
            (0 <= self.sample_num <= 10_000 and 1 <= self.sample_steps <= MAX_TIMESTEPS,
             "train.sample_num must be between 0 and 10,000, and train.sample_steps at least 1"),
            (self.eval_every >= 0, "train.eval_every must be 0 (off) or a number of epochs"),
            (10 <= self.eval_num <= 1_000_000, "train.eval_num must be between 10 and 1,000,000"),
            (0 <= self.threads <= 1024, "train.threads must be between 0 (torch's default) and 1024"),
        ]


@dataclass
class DataConfig:
    source: str = option("fashion-mnist", "a named dataset (fashion-mnist, mnist, cifar10), a folder of images "
                         "(sub-folders are classes), a .zip of one, an .npz/.npy, or a prepared .npy")
    data_dir: str = option("", "where a named dataset's files are, or are downloaded to (empty: the cache)")
    download: bool = option(True, "download a named dataset that is missing")
    image_size: int = option(0, "resize the shorter side to this, then centre-crop (0: the source's own)")
    channels: int = option(0, "convert to 1 or 3 channels (0: the source's own)")
    alpha_background: str = option("white", "transparent pixels are composited onto white or black")
    hflip: bool = option(False, "random horizontal flips in training (not for digits or text)")
    memory_limit_mb: float = option(0.0, "a larger prepared array is memory-mapped (0: half the machine's memory)")
    autoencoder: str = option("", "diffuse in this pretrained autoencoder's latent space (latent diffusion): "
                              f"{', '.join(AUTOENCODERS)}; the prepared images are encoded once and cached, and "
                              "sampling decodes (colour images, sides a multiple of 8). Default: taef2 for colour "
                              "images over 32 px on a run chosen for the data (no --preset), the start's space for "
                              "--train.init, else pixel space; none: pixel space")
    # What the run was trained on, recorded by training:
    num_images: int = recorded(0, "the number of images")
    image_shape: tuple[int, ...] = recorded((), "C, H, W")
    class_names: tuple[str, ...] = recorded((), "the class names")
    prepared_sha256: str = recorded("", "the prepared array's SHA-256")
    latent_mean: tuple[float, ...] = recorded((), "a latent run's latents: each channel's mean on the training set")
    latent_std: tuple[float, ...] = recorded((), "a latent run's latents: each channel's standard deviation there")

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs that a valid data section satisfies."""
        return [
            (bool(self.source.strip()), "data.source must name a dataset, a folder or a file"),
            (self.image_size == 0 or 4 <= self.image_size <= MAX_IMAGE_SIZE,
             f"data.image_size must be 0 (the source's own) or between 4 and {MAX_IMAGE_SIZE}"),
            (self.channels in (0, 1, 3), "data.channels must be 0 (the source's own), 1 or 3"),
            (self.alpha_background in ("white", "black"), "data.alpha_background must be white or black"),
            (self.memory_limit_mb >= 0, "data.memory_limit_mb must be a finite size, 0 or more"),
            *self.latent_checks(),
        ]

    def latent_checks(self) -> list[tuple[bool, str]]:
        """What a latent run (data.autoencoder) needs: a known autoencoder, colour images of a size it encodes, no
        flips (a flipped latent is not the latent of the flipped image), and per-channel statistics if recorded."""
        entry = AUTOENCODERS.get(self.autoencoder)
        scale = entry.downscale if entry else 1
        stats = (self.latent_mean, self.latent_std)
        return [
            (not self.autoencoder or entry is not None, f"data.autoencoder must be one of {', '.join(AUTOENCODERS)} "
             f"(or none, for pixel space), not {self.autoencoder!r}"),
            (not self.autoencoder or self.channels != 1, f"data.autoencoder {self.autoencoder} encodes colour "
             "images, not grey ones (data.channels 1); use --data.channels 3 or train in pixel space"),
            (self.image_size % scale == 0, f"data.autoencoder {self.autoencoder} encodes images whose sides are "
             f"multiples of {scale}, and data.image_size is {self.image_size}; choose "
             f"{max(scale, self.image_size // scale * scale)} or {self.image_size // scale * scale + scale}"),
            (not (self.autoencoder and self.hflip), "data.hflip does not apply to a latent run (a flipped latent "
             "is not the latent of the flipped image, so it would teach the network wrong pairs); drop data.hflip"),
            (len(self.latent_mean) == len(self.latent_std) and (entry is None or not self.latent_mean
                                                                or len(self.latent_mean) == entry.latent_channels)
             and all(math.isfinite(v) for v in stats[0] + stats[1]) and all(s > 0 for s in self.latent_std),
             "data.latent_mean and data.latent_std must hold one value a "
             "latent channel, each std above 0; the run's config.json is damaged"),
        ]


@dataclass
class DistillConfig:
    """A student distilled from a teacher (`tinydiffusion distill`, training/distillation.py). steps = 0: the run is
    not a student."""
    teacher: str = option("", "the teacher: a run directory, a checkpoint or a .safetensors file")
    steps: int = option(0, "the student's sampling steps: each takes one network evaluation (0: not a student)")
    method: str = option("trajectory", "trajectory: each of the student's steps lands where the teacher's path does "
                         "(progressive distillation's target, one round), the one method trained; a consistency or "
                         "dmd student, no longer trained, still loads and samples")
    init: str = option("", "start the student from this trajectory student of the same steps instead of from its "
                       "teacher (a run directory, checkpoint or .safetensors file)")
    guidance_lr: float = option(0.0, "the learning rate of the student's guidance embedding, the one part of its "
                                "network that starts from zero instead of the teacher's weights, on the same "
                                "schedule as train.lr (0: train.lr)")
    guidance_warmup: int = option(0, "the first steps that train only the student's guidance embedding, the rest of "
                                  "its network held at its starting weights, so that the guidance scale, not the "
                                  "rest, learns what differs between scales")
    teacher_sampler: str = option("dpmpp-2m", "the deterministic sampler whose path the student learns to shortcut "
                                  f"(one on the process's own steps: {' or '.join(teacher_samplers())})")
    teacher_steps: int = option(20, "the teacher sampler's steps over the whole path (a multiple of steps)")
    guidance_min: float = option(1.0, "the lowest guidance scale the student learns (drawn uniformly per image)")
    guidance_max: float = option(3.0, "the highest guidance scale the student learns")
    sampler: str = recorded("ddim", "the sampler the student's steps are taken with (set by the method)")
    teacher_sha256: str = recorded("", "the teacher's weights' SHA-256, so a resumed run uses the same teacher")

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message) pairs that a valid distill section satisfies (the teacher's steps against the
        process's: RunConfig.validate). Its vocabulary is the registries': the distillation methods and the
        samplers."""
        method = DISTILL_METHODS.get(self.method)
        student_sampler = method.student_sampler if method else None
        trained = [name for name, entry in DISTILL_METHODS.items() if not entry.removed]
        return [
            (0 <= self.steps <= 1000, "distill.steps must be between 1 and 1,000 (0: not a student)"),
            (method is not None, f"distill.method must be {' or '.join(trained)}"),
            (self.sampler == (student_sampler or self.sampler),
             f"distill.sampler must be the {self.method} method's {student_sampler}"),
            (self.steps == 0 or bool(self.teacher), "a student (distill.steps) needs its distill.teacher"),
            (self.teacher_sampler in teacher_samplers(),
             f"distill.teacher_sampler must be one of {', '.join(teacher_samplers())} (deterministic, on the model's "
             "own steps)"),
            (self.steps == 0 or method is None or method.to_clean or self.teacher_steps % self.steps == 0,
             f"distill.teacher_steps must be a multiple of the student's {self.steps} steps (the trajectory "
             "method's levels lie on the teacher's)"),
            (0 <= self.guidance_lr <= 1, "distill.guidance_lr must be between 0 and 1 (0: train.lr)"),
            (0 <= self.guidance_warmup <= 1_000_000, "distill.guidance_warmup must be between 0 and 1,000,000 steps"),
            (0 <= self.guidance_min <= self.guidance_max <= MAX_GUIDANCE,
             f"need 0 <= distill.guidance_min <= distill.guidance_max <= {MAX_GUIDANCE:g}"),
        ]


TRAINING_SECTIONS = ("net", "diffusion", "train", "data")  # what `train` sets; `distill` sets train and distill
SECTIONS = (*TRAINING_SECTIONS, "distill")


@dataclass
class RunConfig:
    name: str = "run"
    net: NetConfig = field(default_factory=UNetConfig)  # the network's own config class (nets/)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        if not isinstance(data, dict):
            raise UserError("the config is not a JSON object.")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise UserError(f"the config's format_version must be a whole number from 1, not {version!r}.")
        if version > FORMAT_VERSION:
            raise UserError(
                f"the config has format version {version}, newer than this tinydiffusion understands "
                f"({FORMAT_VERSION}); upgrade tinydiffusion to read it."
            )
        if version < 2 and isinstance(data.get("data"), dict):
            data = _from_version_1(data)
        return _build(cls, _without_retired_fields(data), "config")

    @classmethod
    def from_json_file(cls, path: str | Path) -> RunConfig:
        """Read a config.json, which is untrusted input: its size, nesting and every value are checked."""
        path = Path(path)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise UserError(f"{path} is {path.stat().st_size:,} bytes, too large to be a config.json.")
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"{path} does not exist.") from None
        except IsADirectoryError:
            raise UserError(f"{path} is a folder, not a config.json.") from None
        except ValueError as err:  # not JSON, not UTF-8, or an integer of more digits than Python converts
            if "integer string conversion" in str(err):
                raise UserError(f"{path} holds a number of thousands of digits, which no config field takes.") from None
            raise UserError(f"{path} is not valid JSON ({err}).") from None
        except RecursionError:  # json recurses once per nesting level
            raise UserError(f"{path} is nested too deeply to be a config.json.") from None
        except OSError as err:
            raise UserError(f"{path} cannot be read ({err.strerror or err}).") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        """Reject impossible settings before any work starts. A config read from disk is untrusted, so every
        number is checked to be finite and in a range where the code does something sensible. Each section checks
        itself (its `checks()`); the checks here are those across sections."""
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise UserError(f"{name}.{f.name} must be a finite number, not {value}.")
        n, d, distill = self.net, self.diffusion, self.distill
        checks = [
            (NETWORKS.get(n.kind) is type(n), f"net.kind must be one of {', '.join(NETWORKS)}, not {n.kind!r}"),
            *(check for name in SECTIONS for check in getattr(self, name).checks()),
            (1 <= distill.teacher_steps <= d.timesteps,
             f"distill.teacher_steps must be between 1 and the model's {d.timesteps}"),
            _latent_network_check(self),
            (not (self.train.init and distill.steps), "a student starts from its teacher, or from distill.init; "
             "train.init is for training"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message + ".")


def _latent_network_check(config: RunConfig) -> tuple[bool, str]:
    """A pixel run's network takes 1 or 3 channels; a latent run's, its autoencoder's latent channels."""
    entry, channels = AUTOENCODERS.get(config.data.autoencoder), config.net.in_channels
    if entry is None:
        return (bool(config.data.autoencoder) or channels in (1, 3),
                "net.in_channels must be 1 (grey) or 3 (colour)")
    return (channels == entry.latent_channels, f"a latent run's network takes its autoencoder's "
            f"{entry.latent_channels} latent channels ({config.data.autoencoder}), not net.in_channels {channels}")


def _from_version_1(data: dict) -> dict:
    """Version 1 named its (only) dataset `data.dataset` and kept it in `data/fashion-mnist` by default."""
    section = dict(data["data"])
    if "dataset" in section:
        section["source"] = section.pop("dataset")
    if section.get("data_dir") == "data/fashion-mnist":
        section["data_dir"] = ""
    return {**data, "data": section, "format_version": FORMAT_VERSION}


def _without_retired_fields(data: dict) -> dict:
    """The config without the RETIRED_FIELDS an older run's config.json may hold."""
    kept = {section: {k: v for k, v in data[section].items() if k not in names}
            for section, names in RETIRED_FIELDS.items() if isinstance(data.get(section), dict)}
    return {**data, **kept}


def _net_config(data: dict, where: str) -> NetConfig:
    """The net section, as its network's own config class (named by `kind`). Configs written before networks
    had their own classes list every network's fields; the other networks' are dropped."""
    kind = data.get("kind", "unet")
    if not isinstance(kind, str):
        raise UserError(f"{where}.kind must be a network name, not {kind!r}.")
    cls = network_config(kind)
    own = {f.name for f in dataclasses.fields(cls)}
    others = {f.name for other in NETWORKS.values() for f in dataclasses.fields(other)} - own
    return _build(cls, {k: v for k, v in data.items() if k not in others}, where)


def _build(cls, data: dict, where: str):
    """Build dataclass `cls` from a dict, checking names and converting JSON lists to tuples."""
    if cls is NetConfig:
        return _net_config(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where} has unknown field(s) {', '.join(unknown)}.")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{where}.{name} must be an object.")
            kwargs[name] = _build(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Check a JSON value against a field's type; accept strings (from the command line) too."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list of {'integers' if item is int else 'strings'}.")
        return tuple(_coerce(v, item, where) for v in value)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise UserError(f"{where} must be of type {getattr(hint, '__name__', hint)}, not {shown}.")


def apply_overrides(config: RunConfig, overrides: dict[str, object]) -> RunConfig:
    """Return a copy of `config` with dotted-name overrides applied ({"train.lr": "1e-3"}). A new net.kind
    starts that network from its defaults, keeping the data's shape, classes and dropout."""
    data = config.to_dict()
    kind = overrides.get("net.kind")
    if isinstance(kind, str) and kind != config.net.kind:
        shared = {f.name for f in dataclasses.fields(NetConfig)} - {"kind"}
        data["net"] = {**dataclasses.asdict(network_config(kind)()), **{k: data["net"][k] for k in shared}}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise UserError(f"unknown config field {dotted!r}.")
            node = node[part]
        if parts[-1] not in node:
            owners = [name for name, cls in NETWORKS.items() if parts[-1] in {f.name for f in dataclasses.fields(cls)}]
            if parts[0] == "net" and len(parts) == 2 and owners:
                raise UserError(f"--{dotted} is a setting of the {' and '.join(owners)} network, and this run's "
                                f"network is {data['net']['kind']} (choose one with --net).")
            raise UserError(f"unknown config field {dotted!r}.")
        node[parts[-1]] = "" if dotted == "data.autoencoder" and value == "none" else value  # none: pixel space
    return RunConfig.from_dict(data)


def config_value(config: RunConfig, dotted: str):
    """The value of a field named as on the command line ("train.lr")."""
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def config_fields(sections: tuple[str, ...] = TRAINING_SECTIONS) -> list[tuple[str, dataclasses.Field]]:
    """Every field a user can set in `sections`, as (dotted name, field), for building command-line flags and
    their help: the net section's are those of every registered network. The fields training records
    (data.num_images, ...) are not settings, so they have no flags."""
    out, seen = [], set()
    for section in sections:
        hint = typing.get_type_hints(RunConfig)[section]
        classes = NETWORKS.values() if hint is NetConfig else [hint]
        for cls in classes:
            for f in dataclasses.fields(cls):
                dotted = f"{section}.{f.name}"
                if dotted not in seen and not f.metadata.get("recorded"):
                    seen.add(dotted)
                    out.append((dotted, f))
    return out
