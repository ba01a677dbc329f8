"""Typed run configuration, saved as JSON beside the weights.

A run is described by one `RunConfig` made of four sections. Every field can be overridden
from the command line as `--section.field VALUE` (e.g. `--net.base_channels 48`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Bumped when the on-disk layout of configs or checkpoints changes incompatibly.
# 2: `data.dataset` became `data.source`, and a run records the data it was trained on.
FORMAT_VERSION = 2


@dataclass
class NetConfig:
    kind: str = "unet"  # "unet" or "dit"
    image_size: int = 28
    in_channels: int = 1
    num_classes: int = 0  # 0: unconditional; else index `num_classes` means "no class"
    dropout: float = 0.0
    # UNet (Ho et al. 2020, appendix B, scaled down)
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (2,)  # levels (0 = full resolution) with self-attention
    upsample_conv: bool = True  # a 3x3 conv after each nearest-neighbour upsampling
    stem_patch: int = 1  # 2: pixel-unshuffle the input and run the UNet at half resolution
    # DiT (Peebles & Xie 2023)
    patch_size: int = 2
    hidden_size: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    learned_pos_embed: bool = False


@dataclass
class DiffusionConfig:
    schedule: str = "cosine"  # "linear" (Ho et al. 2020) or "cosine" (Nichol & Dhariwal 2021)
    timesteps: int = 1000
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02
    cosine_s: float = 0.008
    zero_terminal_snr: bool = False  # Lin et al. 2023; use with objective "v"
    objective: str = "eps"  # what the network predicts: "eps", "x0" or "v"
    loss_weighting: str = "none"  # "none" or "min-snr" (Hang et al. 2023)
    min_snr_gamma: float = 5.0


@dataclass
class TrainConfig:
    epochs: int = 5
    max_steps: int = 0  # > 0 stops after this many optimizer steps
    max_seconds: float = 0.0  # > 0 ends training once this much wall-clock time has passed (0: no limit)
    batch_size: int = 128  # global batch, split across processes
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # "constant" or "cosine" (decays to lr * min_lr_ratio)
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # classifier-free guidance training (Ho & Salimans 2022)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0  # steps; 0: at the end of every epoch only
    keep: int = 2  # how many checkpoints to keep
    on_nan: str = "stop"  # "stop" or "skip"
    sample_every_epoch: bool = True
    sample_num: int = 36
    sample_steps: int = 25
    eval_every: int = 0  # epochs; > 0: every this many epochs, FD of eval_num EMA samples goes to metrics.jsonl
    eval_num: int = 500  # samples per such FD; FD at N = 500 is noisy and biased upwards: for trends only
    tensorboard: bool = False  # also log to RUN_DIR/tensorboard (pip install 'tinydiffusion[tensorboard]')
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str = "auto"  # "auto", "fp32" or "bf16" (autocast)
    compile: str = "auto"  # "auto", "on" or "off"
    compile_mode: str = "default"  # torch.compile's mode: "default", "reduce-overhead", "max-autotune", ...
    channels_last: str = "auto"  # "auto", "on" or "off"
    fused_adamw: str = "auto"  # "auto", "on" or "off": AdamW's single-kernel implementation
    cuda_graph: str = "auto"  # "auto", "on" or "off": replay each whole step as one CUDA graph (one GPU)
    threads: int = 0  # CPU threads for torch; 0 leaves torch's default


@dataclass
class DataConfig:
    # A named dataset (fashion-mnist, mnist, cifar10), a folder of images (sub-folders are classes),
    # a .zip of one, an .npz/.npy array, or a file written by `tinydiffusion prepare`.
    source: str = "fashion-mnist"
    data_dir: str = ""  # where a named dataset's files are, or are downloaded to ("": the cache)
    download: bool = True
    image_size: int = 0  # resize the shorter side to this, then centre-crop (0: the source's own)
    channels: int = 0  # 1 or 3 to convert (0: the source's own)
    alpha_background: str = "white"  # transparent pixels are composited onto this: "white" or "black"
    hflip: bool = False  # random horizontal flips in training (not for digits or text)
    memory_limit_mb: float = 0.0  # a larger prepared array is memory-mapped (0: half the machine's memory)
    # What the run was trained on, recorded by training (not settings):
    num_images: int = 0
    image_shape: tuple[int, ...] = ()  # C, H, W
    class_names: tuple[str, ...] = ()
    prepared_sha256: str = ""


@dataclass
class RunConfig:
    name: str = "run"
    net: NetConfig = field(default_factory=NetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
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
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UserError(
                f"the config has format version {version}, newer than this tinydiffusion understands "
                f"({FORMAT_VERSION}); upgrade tinydiffusion to read it."
            )
        if version < 2 and isinstance(data.get("data"), dict):
            data = _from_version_1(data)
        return _build(cls, data, "config")

    @classmethod
    def from_json_file(cls, path: str | Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"{path} does not exist.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not valid JSON ({err}).") from None
        return cls.from_dict(data)

    def validate(self) -> None:
        """Reject impossible settings before any work starts."""
        n, d, t = self.net, self.diffusion, self.train
        checks = [
            (n.kind in ("unet", "dit"), f"net.kind must be 'unet' or 'dit', not {n.kind!r}"),
            (n.image_size >= 4, "net.image_size must be at least 4"),
            (n.in_channels >= 1, "net.in_channels must be at least 1"),
            (n.num_classes >= 0, "net.num_classes must be 0 (unconditional) or more"),
            (n.base_channels >= 1 and n.hidden_size >= 1, "network widths must be positive"),
            (len(n.channel_mults) >= 1 and all(m >= 1 for m in n.channel_mults),
             "net.channel_mults must be positive integers"),
            (n.stem_patch >= 1 and n.image_size % n.stem_patch == 0,
             f"net.image_size {n.image_size} is not divisible by net.stem_patch {n.stem_patch}"),
            (n.num_res_blocks >= 1 and n.depth >= 1, "network depths must be at least 1"),
            (n.kind != "dit" or n.image_size % n.patch_size == 0,
             f"net.image_size {n.image_size} is not divisible by net.patch_size {n.patch_size}"),
            (n.kind != "dit" or n.hidden_size % n.num_heads == 0,
             "net.hidden_size must be divisible by net.num_heads"),
            (0.0 <= n.dropout < 1.0, "net.dropout must be in [0, 1)"),
            (d.schedule in ("linear", "cosine"),
             f"diffusion.schedule must be 'linear' or 'cosine', not {d.schedule!r}"),
            (d.timesteps >= 2, "diffusion.timesteps must be at least 2"),
            (d.objective in ("eps", "x0", "v"), f"diffusion.objective must be eps, x0 or v, not {d.objective!r}"),
            (not (d.zero_terminal_snr and d.objective == "eps"),
             "diffusion.zero_terminal_snr needs objective 'v' or 'x0' (eps is undefined at SNR 0)"),
            (d.loss_weighting in ("none", "min-snr"), "diffusion.loss_weighting must be 'none' or 'min-snr'"),
            (0 < d.beta_start < d.beta_end < 1, "need 0 < diffusion.beta_start < diffusion.beta_end < 1"),
            (t.epochs >= 1 or t.max_steps >= 1, "train.epochs must be at least 1"),
            (t.epochs >= 0, "train.epochs must not be negative"),
            (t.max_steps >= 0, "train.max_steps must be 0 (no limit) or positive"),
            (t.batch_size >= 1, "train.batch_size must be at least 1"),
            (t.lr > 0, "train.lr must be positive"),
            (t.lr_schedule in ("constant", "cosine"), "train.lr_schedule must be 'constant' or 'cosine'"),
            (0.0 <= t.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
            (0.0 <= t.label_dropout < 1.0, "train.label_dropout must be in [0, 1)"),
            (t.warmup_steps >= 0 and t.checkpoint_every >= 0, "step counts must not be negative"),
            (t.max_seconds >= 0, "train.max_seconds must be 0 (no limit) or positive"),
            (t.keep >= 1, "train.keep must be at least 1"),
            (t.on_nan in ("stop", "skip"), "train.on_nan must be 'stop' or 'skip'"),
            (t.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16"),
            (t.compile in ("auto", "on", "off"), "train.compile must be auto, on or off"),
            (t.channels_last in ("auto", "on", "off"), "train.channels_last must be auto, on or off"),
            (t.fused_adamw in ("auto", "on", "off"), "train.fused_adamw must be auto, on or off"),
            (t.cuda_graph in ("auto", "on", "off"), "train.cuda_graph must be auto, on or off"),
            (t.compile_mode in COMPILE_MODES, f"train.compile_mode must be one of {', '.join(COMPILE_MODES)}"),
            (t.sample_num >= 0 and t.sample_steps >= 1, "train.sample_num/sample_steps must be positive"),
            (t.eval_every >= 0, "train.eval_every must be 0 (off) or a number of epochs"),
            (t.eval_num >= 10, "train.eval_num must be at least 10"),
            (bool(self.data.source.strip()), "data.source must name a dataset, a folder or a file"),
            (self.data.image_size == 0 or 4 <= self.data.image_size <= 1024,
             "data.image_size must be 0 (the source's own) or between 4 and 1024"),
            (self.data.channels in (0, 1, 3), "data.channels must be 0 (the source's own), 1 or 3"),
            (self.data.alpha_background in ("white", "black"), "data.alpha_background must be white or black"),
            (0 <= self.data.memory_limit_mb < math.inf, "data.memory_limit_mb must be a finite size, 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message + ".")


def _from_version_1(data: dict) -> dict:
    """Version 1 named its (only) dataset `data.dataset` and kept it in `data/fashion-mnist` by default."""
    section = dict(data["data"])
    if "dataset" in section:
        section["source"] = section.pop("dataset")
    if section.get("data_dir") == "data/fashion-mnist":
        section["data_dir"] = ""
    return {**data, "data": section, "format_version": FORMAT_VERSION}


def _build(cls, data: dict, where: str):
    """Build dataclass `cls` from a dict, checking names and converting JSON lists to tuples."""
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
    raise UserError(f"{where} must be of type {getattr(hint, '__name__', hint)}, not {value!r}.")


def apply_overrides(config: RunConfig, overrides: dict[str, object]) -> RunConfig:
    """Return a copy of `config` with dotted-name overrides applied ({"train.lr": "1e-3"})."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = data
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise UserError(f"unknown config field {dotted!r}.")
            node = node[part]
        if parts[-1] not in node:
            raise UserError(f"unknown config field {dotted!r}.")
        node[parts[-1]] = value
    return RunConfig.from_dict(data)


def config_fields() -> list[tuple[str, type]]:
    """All overridable fields as (dotted name, type), for building command-line flags."""
    out = []
    for section in dataclasses.fields(RunConfig):
        hint = typing.get_type_hints(RunConfig)[section.name]
        if dataclasses.is_dataclass(hint):
            for f in dataclasses.fields(hint):
                out.append((f"{section.name}.{f.name}", typing.get_type_hints(hint)[f.name]))
        elif section.name != "format_version":
            out.append((section.name, hint))
    return out
