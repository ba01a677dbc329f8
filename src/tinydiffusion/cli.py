"""Command line: `tinydiffusion train | distill | prepare | sample | export | visualize | inpaint | img2img |
interpolate | evaluate | demo`: it only wires things together.

Nothing here imports torch at the top: `--help` and argument errors answer at once, and torch is
imported by the command that needs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .config import (
    MAX_GUIDANCE,
    MAX_TIMESTEPS,
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_fields,
    config_value,
)
from .data import NAMED, canonical_source
from .defaults import (
    BUILTIN_MASKS,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    MASK_ALIASES,
    STUDENT_STEPS,
    STUDENT_TRAINING,
)
from .errors import UserError
from .files import atomic_write_bytes
from .presets import NAMED_NETWORKS, PRESETS, config_for_data, get_preset, preset_for_source
from .words import count

# Bounds on sampling options; memory is checked as well, before anything is allocated (pipeline.generate).
MAX_NUM = 10_000_000
MAX_BATCH = 100_000
MAX_SEED = 2**63 - 1


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help says it already or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS)
        if shown and "default" not in text:  # `is`: a default of 0 is shown, though 0 == False
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one sentence, no usage dump
        self.exit(2, f"error: {message} (see '{self.prog} --help').\n")


def number(kind: type, low, high):
    """An argparse type: an int or a float from low to high. nan and inf fail the comparison, so they are
    refused here rather than passed on to sample black images."""
    what, bounds = ("whole number", f"between {low:,} and {high:,}") if kind is int else \
        ("number", f"a finite number between {low:g} and {high:g}")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} must be {bounds}")
        return value
    return parse


def output_path(text: str, flag: str, suffixes: tuple[str, ...]) -> Path:
    """Check an output file before any work: a name of the right kind, in a folder that exists. Each
    format is written only under its own suffix, so a .txt never holds a GIF."""
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{flag} must end in {' or '.join(suffixes)}, not {path.name!r}.")
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name ending in {' or '.join(suffixes)}.")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise UserError(f"the folder {parent} for {flag} {what}.")
    try:  # can a file be made there? (as root, permission bits say nothing)
        with open(parent / f".{path.name}.probe", "wb"):
            pass
        (parent / f".{path.name}.probe").unlink()
    except OSError as err:
        raise UserError(f"cannot write {flag} into {parent} ({err.strerror or err}).") from None
    return path


def check_not_an_input(out: Path, flag: str, inputs: list[tuple[str, str]]) -> None:
    """Refuse to write a result over a file the command reads, such as the user's own picture: the same path, or
    another name for the same file (a link)."""
    for input_flag, given in inputs:
        try:
            same = os.path.samefile(out, given)
        except OSError:  # one of them does not exist (yet): the same only if the paths are
            same = out.resolve() == Path(given).resolve()
        if same:
            raise UserError(f"{flag} {out} is the {input_flag} file, which would be written over; give another "
                            f"{flag}.")


def check_figure_fits(needed: int, what: str, advice: str) -> None:
    """A figure is drawn in the machine's memory: refuse one that cannot fit before any work."""
    import torch

    from .nets.memory import format_bytes
    from .pipeline import memory_of

    available = memory_of(torch.device("cpu"))
    if needed > available:
        raise UserError(f"{what} needs about {format_bytes(needed)}, more than the {format_bytes(available)} of "
                        f"memory here; {advice}.")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write that fails after the work (a full disk) is one sentence; atomic writes leave no half file."""
    try:
        yield
    except OSError as err:
        raise UserError(f"could not write {path} ({err.strerror or err}); nothing was written.") from None


# --- train -----------------------------------------------------------------------------------

TRAIN_SHORTCUTS = {  # flag -> config field; the spellings scripts and docs rely on
    "--data": "data.source", "--data-dir": "data.data_dir", "--epochs": "train.epochs",
    "--max-steps": "train.max_steps", "--batch-size": "train.batch_size", "--seed": "train.seed", "--lr": "train.lr",
    "--checkpoint-every": "train.checkpoint_every", "--keep": "train.keep",
    "--device": "train.device",
}
HELP_PRESET = "fashion-mnist"  # whose values `train --help` shows as the defaults


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a diffusion model", description="Train a diffusion model. "
                       "Any config field can be set as --SECTION.FIELD VALUE (e.g. --train.lr 1e-3); all are "
                       f"listed below, with the {HELP_PRESET} preset's values as defaults (another --preset, "
                       "or --data, starts from other values).")
    p.add_argument("--preset", help=f"starting config: {', '.join(PRESETS)} (default: the named dataset's own, "
                   "fashion-mnist without --data, or one chosen for the images' size)")
    p.add_argument("--run-dir", help="where checkpoints, samples and logs go (default: runs/<preset or data name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint, or from "
                   "RUN_DIR/checkpoints/step-N (later checkpoints and metrics are then superseded); a run with no "
                   "checkpoint yet restarts from step 0, and a finished run says so and exits with status 0 "
                   "(raise --max-steps or --epochs to train it further)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--net", choices=list(NAMED_NETWORKS), help="network: the UNet or a Transformer (dit = dit-s) "
                   "(default: the preset's)")
    preset = get_preset(HELP_PRESET)
    fields = dict(config_fields())
    for flag, dotted in TRAIN_SHORTCUTS.items():
        p.add_argument(flag, dest=dotted, default=None, metavar=_metavar(dotted, fields[dotted]),
                       help=f"same as --{dotted}: {_field_help(preset, dotted, fields[dotted])}")
    groups = {}
    for dotted, f in fields.items():
        section = dotted.split(".")[0]
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section} settings")
        groups[section].add_argument(f"--{dotted}", dest=dotted, default=None, metavar=_metavar(dotted, f),
                                     help=_field_help(preset, dotted, f))
    p.set_defaults(run=cmd_train)


def _field_help(preset: RunConfig, dotted: str, f: dataclasses.Field) -> str:
    """A config field's own description and its value in the preset `train --help` shows (for a field of
    another network than the preset's, that network's default)."""
    section = getattr(preset, dotted.split(".")[0])
    value = config_value(preset, dotted) if hasattr(section, f.name) else f.default
    if isinstance(value, tuple):
        value = ",".join(map(str, value)) or "none"
    elif isinstance(value, bool):
        value = str(value).lower()
    elif value == "":
        value = "empty"
    return f"{f.metadata['help']} (default: {value})".replace("%", "%%")  # argparse formats help with %


METAVARS = {"data.source": "SOURCE", "data.data_dir": "DIR", "train.device": "DEVICE"}  # else by the field's type


def _metavar(dotted: str, f: dataclasses.Field) -> str:
    """One placeholder per kind of value, whichever command shows the option: SOURCE, DIR, N, X, BOOL, TEXT."""
    hint = str(f.type)
    if dotted in METAVARS:
        return METAVARS[dotted]
    return "N,N,..." if hint.startswith("tuple") else {"int": "N", "float": "X", "bool": "BOOL"}.get(hint, "TEXT")


def cmd_train(args) -> int:
    from .checkpoint import CHECKPOINTS
    from .data import load_data
    from .files import check_run_not_in_use

    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    checkpoint = None
    if args.resume:
        config, run_dir, checkpoint = resumed_config(args, overrides)
        dataset = load_data(config.data, "train", progress=not args.no_progress)
        if already_complete(config, run_dir, checkpoint, len(dataset)):
            return 0
    else:
        source = str(overrides.get("data.source", "fashion-mnist"))
        if "data.source" in overrides:
            overrides["data.source"] = canonical_source(source)
        preset = args.preset or preset_for_source(source)
        if preset != "auto":
            get_preset(preset)  # an unknown name is refused before any work
        run_dir = Path(args.run_dir or f"runs/{args.preset or run_name(source)}")
        check_run_not_in_use(run_dir)  # a run still going is "in use", not merely "already holds a run"
        if (run_dir / CHECKPOINTS).exists() or (run_dir / "config.json").exists():
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                            "or choose another --run-dir.")
        before_data = config_for_data(preset, args.net, overrides)
        before_data.validate()  # every flag checked before any work; the network is fitted to the data below
        dataset = load_data(before_data.data, "train", progress=not args.no_progress)
        classes = len(dataset.class_names) if dataset.labels is not None else 0
        config = config_for_data(preset, args.net, overrides, (tuple(dataset.images.shape[1:]), classes, len(dataset)))
        if preset == "auto":
            config = dataclasses.replace(config, name=run_dir.name)
        config.validate()
    return run_training(args, config, run_dir, dataset, checkpoint)


def resumed_config(args, overrides: dict):
    """(config, run directory, checkpoint) of a run `--resume` continues: its saved config with the flags that
    may change (the train section's) applied; a flag that would be ignored is refused instead."""
    from .checkpoint import load_config, resume_target

    if getattr(args, "net", None):
        raise UserError("a resumed run keeps its network; drop --net.")
    if getattr(args, "preset", None):
        raise UserError("--preset does not apply to --resume (a resumed run keeps its saved config); drop it.")
    # RUN (its latest checkpoint) or RUN/checkpoints/step-N (that one); a run in use is refused first
    run_dir, checkpoint = resume_target(args.resume)
    if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
        raise UserError(f"--run-dir {args.run_dir} is not the run --resume continues ({run_dir}); "
                        "a resumed run stays in its own directory, so drop --run-dir.")
    saved = load_config(run_dir / "config.json")
    config = apply_overrides(saved, overrides)
    if config.net != saved.net or config.diffusion != saved.diffusion or config.distill != saved.distill:
        raise UserError("a resumed run keeps its network, diffusion and distillation settings; "
                        "start a new --run-dir to change them.")
    config.validate()
    changed = [f"{k} = {config_value(config, k)} (was {config_value(saved, k)})" for k in sorted(overrides)
               if config_value(config, k) != config_value(saved, k)]
    if changed:
        print(f"resuming with {', '.join(changed)}")
    return config, run_dir, checkpoint


def already_complete(config: RunConfig, run_dir: Path, checkpoint: Path | None, num_images: int) -> bool:
    """Whether the checkpoint a resume continues from is at the run's last step already: then that is said in one
    sentence and nothing is trained or written. The last step is the Trainer's: the steps a time budget planned,
    else train.max_steps, else train.epochs passes of whole batches; a budget not planned yet has none
    (tests/test_cli.py checks that such a resume takes no step)."""
    from .checkpoint import latest_checkpoint, load_training_state
    from .training.budget import last_step

    found = checkpoint or latest_checkpoint(run_dir)
    step = load_training_state(found)["step"] if found is not None else None  # a damaged one is refused here
    t = config.train
    last = last_step(t, num_images // t.batch_size) or 0
    if not isinstance(step, int) or not 0 < last <= step:
        return False
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process says it
        print(f"{run_dir} is already complete: its checkpoint is at step {step:,} of {last:,}, so there is nothing "
              "to train; resume with a higher --max-steps (or --epochs) to train it further.")
    return True


def run_training(args, config: RunConfig, run_dir: Path, dataset, checkpoint, net=None) -> int:
    from .training import train

    result = train(config, run_dir, resume=bool(args.resume), dataset=dataset, progress=not args.no_progress,
                   checkpoint=checkpoint, net=net)
    if result.main_process:
        print(f"done: step {result.step:,}, final loss {result.final_loss:.4f}, {result.images_per_second:.0f} "
              f"images/s, {result.wall_seconds:.0f} s; checkpoints in {run_dir}")
    return 0


# --- distill ---------------------------------------------------------------------------------

DISTILL_SHORTCUTS = {flag: dotted for flag, dotted in TRAIN_SHORTCUTS.items() if flag != "--epochs"}


def add_distill(sub) -> None:
    p = sub.add_parser("distill", help="distill a trained model into a student that samples in 1 to 4 steps",
                       description="Distill a teacher into a student that takes --steps steps, each one "
                       "network evaluation with guidance folded in (training/distillation.py). The student is a run "
                       "directory like any other: sample, evaluate and generate() use its own sampler and steps. "
                       "It trains on the teacher's data (--data-dir, or --data, where it lies now), and resumes, stops "
                       "on a signal "
                       "and runs under torchrun as training does.")
    p.add_argument("--teacher", help="the teacher: a run directory, a checkpoint or a .safetensors file (default: "
                   "the bundled model)")
    p.add_argument("--steps", "--student-steps", dest="distill.steps", type=int, choices=STUDENT_STEPS, default=None,
                   metavar="K", help=f"the student's own sampling steps, {', '.join(map(str, STUDENT_STEPS[:-1]))} or "
                   f"{STUDENT_STEPS[-1]}, each one network evaluation with guidance folded in (not a sampler's steps, "
                   "as sample --steps; --student-steps is the same option) (default: 4)")
    p.add_argument("--run-dir", help="where the student goes (default: runs/<teacher's name>-student-<steps>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a distillation from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    fields, every_field = dict(config_fields(("train", "distill"))), dict(config_fields())
    defaults = RunConfig(train=dataclasses.replace(TrainConfig(), **STUDENT_TRAINING))
    for flag, dotted in DISTILL_SHORTCUTS.items():
        p.add_argument(flag, dest=dotted, default=None, metavar=_metavar(dotted, every_field[dotted]),
                       help=f"same as --{dotted}")
    p.add_argument("--epochs", dest="train.epochs", default=None, metavar="N",
                   help="passes over the teacher's data (default: 1)")
    group = p.add_argument_group("distillation and training settings (the train section's defaults are a "
                                 "fine-tuning's)")
    for dotted, f in fields.items():
        if dotted not in ("distill.steps", "distill.teacher"):
            group.add_argument(f"--{dotted}", dest=dotted, default=None, metavar=_metavar(dotted, f),
                               help=_field_help(defaults, dotted, f))
    p.set_defaults(run=cmd_distill)


def cmd_distill(args) -> int:
    from .checkpoint import CHECKPOINTS, resolve_checkpoint
    from .data import load_data
    from .files import check_run_not_in_use
    from .pipeline import load_model
    from .training.distillation import student_config, student_network

    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    if args.resume:
        if args.teacher:
            raise UserError("a resumed distillation keeps its teacher; drop --teacher.")
        config, run_dir, checkpoint = resumed_config(args, overrides)
        dataset = load_data(config.data, "train", progress=not args.no_progress)
        if already_complete(config, run_dir, checkpoint, len(dataset)):
            return 0
        return run_training(args, config, run_dir, dataset, checkpoint)
    teacher_weights, _ = resolve_checkpoint(args.teacher)
    teacher = load_model(args.teacher, device="cpu")
    if teacher.config.distill.steps:
        raise UserError(f"{teacher_weights} is itself a student; distill from its teacher "
                        f"({teacher.config.distill.teacher}).")
    config = student_config(teacher, teacher_weights, overrides)
    config.validate()
    run_dir = Path(args.run_dir or f"runs/{config.name}")
    check_run_not_in_use(run_dir)
    if (run_dir / CHECKPOINTS).exists() or (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with tinydiffusion distill --resume {run_dir} "
                        "or choose another --run-dir.")
    dataset = load_data(config.data, "train", progress=not args.no_progress)
    return run_training(args, config, run_dir, dataset, None, net=student_network(config, teacher.net))


def run_name(source: str) -> str:
    """A default run name from the data: `mnist`, `pets` for pets/ or pets.zip, `mnist-10k` for mnist-10k/train."""
    path = Path(source)
    name = path.name.removesuffix(".zip").removesuffix(".npz").removesuffix(".npy") or "run"
    return f"{path.parent.name}" if name.lower() in ("train", "training") and path.parent.name else name


# --- prepare ---------------------------------------------------------------------------------

def add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="decode a dataset once into a prepared array (.npy + JSON manifest)",
                       description="Decode a source of images into a prepared uint8 array ahead of training "
                       "(on a cluster's login node, say); then train with --data FILE.")
    p.add_argument("source", help=f"a folder of images, a .zip, an .npz/.npy, or a named dataset ({', '.join(NAMED)})")
    p.add_argument("--out", required=True, help="the prepared file, FILE.npy (FILE.labels.npy and FILE.json beside it)")
    p.add_argument("--data-dir", dest="data.data_dir", default=None, metavar="DIR", help="where a named dataset's "
                   "files are (default: the cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    fields = dict(config_fields())
    for dotted in ("data.image_size", "data.channels", "data.alpha_background", "data.download"):
        p.add_argument(f"--{dotted}", dest=dotted, default=None, metavar=_metavar(dotted, fields[dotted]),
                       help=_field_help(RunConfig(), dotted, fields[dotted]))
    p.set_defaults(run=cmd_prepare)


def cmd_prepare(args) -> int:
    from .data import prepare_source

    out = output_path(args.out, "--out", (".npy",))
    check_not_an_input(out, "--out", [("source", args.source)])
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    config = apply_overrides(RunConfig(data=DataConfig(source=args.source)), overrides)
    config.validate()
    with writing(out):
        prepare_source(config.data, out, progress=not args.no_progress)
    print(f"wrote {out} (use it with: tinydiffusion train --data {out})")
    return 0


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list the prepared data in the cache with sizes, or clear it",
                       description="List the cache's prepared datasets (source, split, images, size) and the size of "
                       "its other parts. Only the newest preparation of each source is kept; --clear removes them "
                       "all (they are prepared again when needed); downloaded datasets are kept.")
    p.add_argument("--clear", action="store_true", help="remove the prepared data and what was derived from it")
    p.set_defaults(run=cmd_cache)


def cmd_cache(args) -> int:
    from .data import cache

    return cache.run(args.clear)


# --- sample ----------------------------------------------------------------------------------

def add_checkpoint(p) -> None:
    p.add_argument("--checkpoint", help="a run directory, a checkpoint directory or a .safetensors file "
                   "(default: the bundled model)")


def add_sampling_options(p, default_num: int) -> None:
    p.add_argument("--num", type=number(int, 1, MAX_NUM), default=default_num, help="number of images")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="class to generate, by the model's class name or index (repeatable; default: every "
                   "class in turn)")
    add_sampler_options(p, "seed of the noise: a seed gives the same images at any --batch-size")
    p.add_argument("--batch-size", type=number(int, 1, MAX_BATCH), default=500,
                   help="images per network call; a smaller batch needs less memory, with the same images")


def add_sampler_options(p, seed_help: str) -> None:
    """The options every drawing command shares (sample, visualize, evaluate and the edits)."""
    p.add_argument("--sampler", default=None, choices=list(DEFAULT_STEPS),
                   help=f"sampler (default: {DEFAULT_SAMPLER}, or a distilled student's own)")
    own_steps = ", ".join(f"{name} {steps or 'T'}" for name, steps in DEFAULT_STEPS.items())
    p.add_argument("--steps", type=number(int, 1, MAX_TIMESTEPS),
                   help=f"sampling steps (default: the sampler's own: {own_steps}, where T is the model's)")
    p.add_argument("--seed", type=number(int, 0, MAX_SEED), default=0, help=seed_help)
    p.add_argument("--guidance", type=number(float, 0, MAX_GUIDANCE), default=None,
                   help="classifier-free guidance scale: 1 is the plain conditional model, 0 the unconditional "
                   f"one (default: {DEFAULT_GUIDANCE} for class-conditional models, 1 for unconditional ones)")
    p.add_argument("--eta", type=number(float, 0, 1), default=None, help="ddim only: the noise added at each step, "
                   "from 0 (deterministic) to 1 (as DDPM) (default: 0)")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"], default=None,
                   help="ddpm, ddim, dpmpp-2m and consistency only: which of the model's timesteps are visited "
                   "(default: trailing)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")


def sampler_options(args) -> dict:
    """The sampler options given on the command line; generate() checks the sampler takes them."""
    return {name: value for name, value in (("eta", args.eta), ("spacing", args.spacing)) if value is not None}


def sampling_settings(args, model) -> tuple[str, int, float]:
    """(sampler, steps, guidance) as they will be used: the flags, else the model's defaults."""
    from . import pipeline

    return pipeline.sampling_settings(model, args.sampler, args.steps, args.guidance, sampler_options(args))


def run_sampling(args, model, progress: bool = True, callback=None):
    from .pipeline import generate

    classes = [model.class_index(c) for c in args.classes] if args.classes else None
    sampler, steps, guidance = sampling_settings(args, model)
    return generate(model, args.num, classes=classes, sampler=sampler, steps=steps, guidance=guidance,
                    seed=args.seed, batch_size=args.batch_size, progress=progress, callback=callback,
                    **sampler_options(args))


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images", description="Generate images from a trained model "
                       "(default: the model bundled with the package). An existing --out is replaced.")
    add_checkpoint(p)
    p.add_argument("--fast", action="store_true", help="draw with the bundled model's distilled student: "
                   "4 steps of one network evaluation each, guidance folded in (instead of --checkpoint)")
    add_sampling_options(p, default_num=64)
    p.add_argument("--out", default="samples.png", help="FILE.png (a grid) or FILE.npz (uint8 arr_0 N x H x W x C)")
    p.add_argument("--nrow", type=number(int, 1, MAX_NUM),
                   help="images per row in the PNG grid (default: a square grid, or one column per class)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch", help="run the network in "
                   "PyTorch, or export it to ONNX in memory and run that graph in onnxruntime, on the CPU (pip "
                   "install 'tinydiffusion[onnx]'; docs/export.md): the same images, within float rounding; with "
                   "onnxruntime, --checkpoint may also be a file `export` wrote, FILE.onnx")
    p.set_defaults(run=cmd_sample)


def sampling_model(args, checkpoint):
    """The model `sample` draws with: in PyTorch, or (--runtime onnxruntime) through its graph exported in memory,
    or read from an exported .onnx file alone."""
    from .pipeline import load_model

    is_onnx = checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx"
    if args.runtime == "torch":
        if is_onnx:
            raise UserError(f"{checkpoint} is an exported ONNX file; sample it with --runtime onnxruntime.")
        return load_model(checkpoint, args.device)
    from .export import load_onnx_model, onnx_graph

    if args.device not in ("auto", "cpu"):
        raise UserError("--runtime onnxruntime runs on the CPU; drop --device.")
    if is_onnx:
        return load_onnx_model(checkpoint)
    model = load_model(checkpoint, "cpu")
    return dataclasses.replace(model, graph=onnx_graph(model))


def cmd_sample(args) -> int:
    from .checkpoint import BUNDLED_STUDENT
    from .evaluation.samples import save_npz
    from .viz import class_columns, save_grid, save_image

    out = output_path(args.out, "--out", (".png", ".npz"))
    if args.nrow and args.nrow > args.num:
        raise UserError(f"--nrow {args.nrow} is more than the {count(args.num, 'image')} asked for (--num).")
    if args.fast and args.checkpoint:
        raise UserError("--fast draws with the bundled student; drop --checkpoint (or --fast, to sample that one).")
    model = sampling_model(args, BUNDLED_STUDENT if args.fast else args.checkpoint)
    images, labels = run_sampling(args, model)
    with writing(out):
        if out.suffix.lower() == ".npz":
            save_npz(out, images.numpy(), None if labels is None else labels.numpy(), model.class_names)
        elif args.classes is None and model.num_classes and args.num % model.num_classes == 0 and not args.nrow:
            save_image(class_columns(images, model.class_names), out)  # every class in turn: one named column each
        else:
            save_grid(images, out, nrow=args.nrow)
    print(f"wrote {count(len(images), 'image')} to {out}")
    return 0


# --- export ----------------------------------------------------------------------------------

def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model for other runtimes: one ONNX file",
                       description="Write a model as one ONNX file that any runtime can sample from: inputs x, t "
                       "(the continuous time in [0, 1]), y (the class) and, for a distilled student, guidance; "
                       "outputs x0 and eps; with the image shape, classes, schedule and default sampler in its "
                       "metadata (docs/export.md). An existing --out is replaced.")
    p.add_argument("checkpoint", nargs="?", metavar="RUN_OR_CHECKPOINT", help="a run directory, a checkpoint "
                   "directory or a .safetensors file (default: the bundled model)")
    p.add_argument("--fast", action="store_true", help="export the bundled model's distilled student (4 steps, "
                   "guidance folded in) instead")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="onnx: one .onnx file")
    p.add_argument("--out", default="model.onnx", help="the file to write, FILE.onnx")
    p.set_defaults(run=cmd_export)


def cmd_export(args) -> int:
    from .checkpoint import BUNDLED_STUDENT, resolve_checkpoint
    from .export import write_onnx
    from .pipeline import load_model

    if args.fast and args.checkpoint:
        raise UserError("--fast exports the bundled student; drop RUN_OR_CHECKPOINT (or --fast, to export that one).")
    out = output_path(args.out, "--out", (".onnx",))
    source = BUNDLED_STUDENT if args.fast else args.checkpoint
    weights, config = resolve_checkpoint(source)
    check_not_an_input(out, "--out", [("checkpoint", weights), ("checkpoint's config", config)])
    model = load_model(source, "cpu")
    with writing(out):
        size = write_onnx(model, out)
    print(f"wrote {out} ({size / 1e6:.1f} MB; inputs x, t, y{', guidance' if model.config.net.guidance_input else ''};"
          " outputs x0, eps)")
    return 0


# --- visualize -------------------------------------------------------------------------------

def add_visualize(sub) -> None:
    p = sub.add_parser("visualize", help="draw the forward or reverse diffusion process")
    which = p.add_subparsers(dest="what", required=True, parser_class=Parser)
    fwd = which.add_parser("forward", help="images noised at evenly spaced t from 0 to T")
    fwd.add_argument("--checkpoint", help="model whose noise schedule to use (default: the bundled model)")
    fwd.add_argument("--data-dir", metavar="DIR", help="where the model's named dataset is (default: where training "
                     "put it)")
    fwd.add_argument("--num-images", type=number(int, 1, 100), default=4, help="rows: one image of each class in turn")
    fwd.add_argument("--columns", type=number(int, 2, 100), default=10, help="noise levels shown, from t = 0 to T")
    fwd.add_argument("--out", default="forward.png", help="the figure, FILE.png")
    fwd.set_defaults(run=cmd_visualize_forward)
    rev = which.add_parser("reverse", help="samples at several steps of the reverse process, and a GIF")
    add_checkpoint(rev)
    add_sampling_options(rev, default_num=8)
    rev.add_argument("--columns", type=number(int, 2, 1000), default=10, help="steps shown, evenly spread, the last "
                     "being the final image")
    rev.add_argument("--out", default="reverse.png", help="the figure, FILE.png: one row per image")
    rev.add_argument("--gif", help="also write an animated GIF of the denoising to this FILE.gif")
    rev.set_defaults(run=cmd_visualize_reverse)


def cmd_visualize_forward(args) -> int:
    import numpy as np

    from .checkpoint import load_config, resolve_checkpoint
    from .data import load_data
    from .diffusion import GaussianDiffusion
    from .viz import forward_strip, save_image

    out = output_path(args.out, "--out", (".png",))
    _, config_path = resolve_checkpoint(args.checkpoint)
    config = load_config(config_path)
    image_bytes = config.net.in_channels * config.net.image_size**2
    # each row: float32 x_t at every column, kept as uint8, then drawn into the grid
    check_figure_fits(args.num_images * args.columns * image_bytes * 3 + args.columns * image_bytes * 8,
                      f"a figure of {args.num_images} x {args.columns} images", "lower --num-images or --columns")
    data_config = dataclasses.replace(config.data, data_dir=args.data_dir) if args.data_dir else config.data
    data = load_data(data_config, "test") or load_data(data_config, "train")
    if data is None:
        raise UserError(f"the model's data ({config.data.source}) is not on this machine; pass --data-dir.")
    if data.labels is not None:  # one image of each class in turn
        picks = [int(np.argmax(data.labels.numpy() == c)) for c in range(len(data.class_names))
                 if (data.labels == c).any()][:args.num_images]
    else:
        picks = list(range(min(args.num_images, len(data))))
    image = forward_strip(GaussianDiffusion(config.diffusion), data.images[picks], args.columns)
    with writing(out):
        save_image(image, out)
    print(f"wrote {out}")
    return 0


def cmd_visualize_reverse(args) -> int:
    from .pipeline import load_model
    from .viz import ReverseRecorder, save_image

    out = output_path(args.out, "--out", (".png",))
    gif = output_path(args.gif, "--gif", (".gif",)) if args.gif else None
    model = load_model(args.checkpoint, args.device)
    _, steps, _ = sampling_settings(args, model)
    net = model.config.net
    check_figure_fits(steps * args.num * net.in_channels * net.image_size**2 * 4,  # x_t of every image at every step
                      f"recording {count(steps, 'step')} of {count(args.num, 'image')}", "lower --num or --steps")
    recorder = ReverseRecorder()
    run_sampling(args, model, progress=False, callback=recorder)
    with writing(out):
        save_image(recorder.figure(args.columns), out)
    print(f"wrote {out}")
    if gif:
        with writing(gif):
            recorder.save_gif(gif)
        print(f"wrote {gif}")
    return 0


# --- inpaint, img2img, interpolate -----------------------------------------------------------------

def add_edit_options(p, out_default: str) -> None:
    add_checkpoint(p)
    p.add_argument("--image", required=True, help="the picture: any image file Pillow reads, converted to the "
                   "model's channels and resized to its size (stretched if it is not square); the result is resized "
                   "back to the picture's own size")
    p.add_argument("--class", dest="edit_class", metavar="NAME", help="the class to draw toward, by the model's "
                   "class name or index (default: none, the model runs unconditionally, and --guidance does not apply)")
    p.add_argument("--num", type=number(int, 1, 1000), default=1, help="variants to make, written as a grid")
    add_sampler_options(p, "seed of the noise: variant i is the same for a seed whatever --num is")
    p.add_argument("--out", default=out_default, help="FILE.png: the edited picture at its own size, or with --num N "
                   "a grid of the N variants (replaced if it exists)")


def read_edit_input(args, *masks):
    """(--out, the pictures, the model): every file is read, and refused in one sentence, before the model."""
    from .editing import read_picture
    from .pipeline import load_model

    out = output_path(args.out, "--out", (".png",))
    check_not_an_input(out, "--out", [("--image", args.image), *masks])
    pictures = [read_picture(args.image, "--image")] + [read_picture(path, flag) for flag, path in masks]
    return out, pictures, load_model(args.checkpoint, args.device)


def edit_classes(model, names: str | list[str] | None) -> list[int] | None:
    """Class indices from one --class NAME or several; None for none."""
    names = [names] if isinstance(names, str) else names
    return [model.class_index(name) for name in names] if names else None


def write_edits(images, out: Path) -> None:
    """One picture as it is, or N variants as a grid; refused first if it cannot fit in memory."""
    from .viz import grid_image, save_image

    check_figure_fits(images.numel() * 4, f"{count(len(images), 'picture')} of {images.shape[3]}x{images.shape[2]}",
                      "lower --num or use a smaller picture")
    with writing(out):
        save_image(grid_image(images, padding=0 if len(images) == 1 else 2), out)
    print(f"wrote {out}")


def add_inpaint(sub) -> None:
    p = sub.add_parser("inpaint", help="regenerate a masked region of a picture (RePaint)",
                       description="Regenerate the masked region of a picture in keeping with the rest (RePaint, "
                       "editing/inpaint.py); the pixels outside the mask are written back exactly as given.")
    add_edit_options(p, "inpainted.png")
    p.add_argument("--mask", required=True, type=lambda text: MASK_ALIASES.get(text, text),
                   help=f"an image the picture's size, white where to regenerate (black, or transparent, to keep), or "
                   f"a built-in mask: {', '.join(BUILTIN_MASKS)} (center is centre; the strokes follow --seed)")
    p.add_argument("--jump-length", type=number(int, 1, MAX_TIMESTEPS), default=None,
                   help="RePaint's jumps: levels gone back up at each (default: a tenth of the steps)")
    p.add_argument("--resamplings", type=number(int, 1, 100), default=5,
                   help="RePaint's resampling: times each stretch between jumps is walked (1: no jumps)")
    p.set_defaults(run=cmd_inpaint)


def cmd_inpaint(args) -> int:
    import torch

    from .editing import builtin_mask, fit_image, fit_mask, inpaint, picture_pixels, scale_mask, to_picture_size

    builtin = args.mask in BUILTIN_MASKS
    if not builtin and not Path(args.mask).exists():
        raise UserError(f"--mask {args.mask} is neither a file nor a built-in mask ({', '.join(BUILTIN_MASKS)}).")
    out, pictures, model = read_edit_input(args, *([] if builtin else [("--mask", args.mask)]))
    picture = pictures[0]
    if builtin:
        mask = builtin_mask(args.mask, model.config.net.image_size, seed=args.seed)
        full = scale_mask(mask, picture.size)
    else:
        mask, full = fit_mask(model, pictures[1], picture.size)
    if not mask.any():
        raise UserError("the mask is empty (no white pixel), so there is nothing to inpaint.")
    results = inpaint(model, fit_image(model, picture), mask, args.num, classes=edit_classes(model, args.edit_class),
                      sampler=args.sampler, steps=args.steps, guidance=args.guidance, seed=args.seed,
                      jump_length=args.jump_length, resamplings=args.resamplings, **sampler_options(args))
    given = picture_pixels(model, picture)  # the picture's own pixels outside the mask, at its own size
    write_edits(torch.where(full, to_picture_size(results, picture.size), given), out)
    return 0


def add_img2img(sub) -> None:
    p = sub.add_parser("img2img", help="redraw a picture from part-way along the reverse process (SDEdit)",
                       description="Noise a picture to a depth and denoise it, optionally toward another class "
                       "(SDEdit, editing/img2img.py): --strength 0 returns it as the model sees it (at the model's "
                       "size, resized back), 1 draws a new image.")
    add_edit_options(p, "img2img.png")
    p.add_argument("--strength", type=number(float, 0, 1), required=True,
                   help="how much of the reverse process is redone, from 0 (the picture as it is) to 1 (a new image)")
    p.set_defaults(run=cmd_img2img)


def cmd_img2img(args) -> int:
    from .editing import fit_image, img2img, to_picture_size

    out, (picture,), model = read_edit_input(args)
    results = img2img(model, fit_image(model, picture), args.strength, args.num,
                      classes=edit_classes(model, args.edit_class), sampler=args.sampler, steps=args.steps,
                      guidance=args.guidance, seed=args.seed, **sampler_options(args))
    write_edits(to_picture_size(results, picture.size), out)
    return 0


def add_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="images along a path between two noises, two pictures or two classes",
                       description="Draw images along a spherical path between the noises of two seeds (--seed, "
                       "--seed-end), or between two pictures found again by DDIM inversion (--images), and from "
                       "one class to another with two --class (editing/interpolate.py).")
    add_checkpoint(p)
    p.add_argument("--images", nargs=2, metavar=("FIRST", "SECOND"), help="two pictures to go between, inverted "
                   "with DDIM (then the sampler is ddim, with --steps 50 unless given)")
    p.add_argument("--seed-end", type=number(int, 0, MAX_SEED), default=None,
                   help="seed of the second noise (default: --seed + 1)")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME", help="the class of every frame, "
                   "or given twice, the first and last frames' classes (default: none, the model runs "
                   "unconditionally)")
    p.add_argument("--frames", type=number(int, 2, 1000), default=8, help="images along the path, both ends included")
    add_sampler_options(p, "seed of the first noise")
    p.add_argument("--out", default="interpolation.png", help="the strip, FILE.png (replaced if it exists)")
    p.add_argument("--gif", help="also write the frames, there and back, as an animated FILE.gif")
    p.set_defaults(run=cmd_interpolate)


def cmd_interpolate(args) -> int:
    from .editing import fit_image, interpolate, read_picture
    from .pipeline import load_model
    from .viz import grid_image, save_image

    out = output_path(args.out, "--out", (".png",))
    gif = output_path(args.gif, "--gif", (".gif",)) if args.gif else None
    for flag, path in (("--out", out), ("--gif", gif)):
        if path is not None:
            check_not_an_input(path, flag, [("--images", image) for image in args.images or ()])
    if args.classes and len(args.classes) > 2:
        raise UserError(f"an interpolation goes between at most two classes, not {len(args.classes)} --class.")
    if args.images and args.seed_end is not None:
        raise UserError("--seed-end picks the second noise; with --images the pictures give both ends, so drop it.")
    pictures = [read_picture(path, "--images") for path in args.images or ()]
    model = load_model(args.checkpoint, args.device)
    images = tuple(fit_image(model, picture) for picture in pictures) or None
    seed_end = args.seed + 1 if args.seed_end is None else args.seed_end
    if seed_end > MAX_SEED:
        raise UserError(f"--seed {args.seed} has no next seed; give --seed-end.")
    frames = interpolate(model, args.frames, seeds=(args.seed, seed_end), images=images,
                         classes=edit_classes(model, args.classes), sampler=args.sampler, steps=args.steps,
                         guidance=args.guidance, **sampler_options(args))
    with writing(out):
        save_image(grid_image(frames, nrow=len(frames), scale=2), out)
    print(f"wrote {out}")
    if gif:
        pictures = [grid_image(frame[None], padding=0, scale=4) for frame in frames]
        with writing(gif):
            save_image(pictures[0], gif, save_all=True, append_images=pictures[1:] + pictures[-2:0:-1],
                       duration=120, loop=0)
        print(f"wrote {gif}")
    return 0


# --- evaluate --------------------------------------------------------------------------------

def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score samples: FD in a classifier's features of the data, precision, recall",
                       description="Score a model's samples, or a file of samples, against real data: FD in the "
                       "features of a classifier of that data (Fashion-MNIST's bundled one; for any other labelled "
                       "data, one trained once on its train split and cached), with the floor of N real images, "
                       "precision, recall and class accuracy. Unlabelled data gets Inception FID through "
                       "torch-fidelity, where it and its weights are installed.")
    p.add_argument("checkpoint", nargs="?", help="a run directory, checkpoint directory or .safetensors file "
                   "(default: the bundled model), scored against the data it was trained on")
    p.add_argument("--samples", help="score the images in this .npz (arr_0: uint8 N x H x W x C, optional labels) "
                   "instead")
    add_sampling_options(p, default_num=10_000)
    p.add_argument("--data", metavar="SOURCE", help=f"score against this data: a named dataset ({', '.join(NAMED)}), "
                   "a folder of images, a .zip or an .npz/.npy (default: the run's own data; fashion-mnist with "
                   "--samples)")
    p.add_argument("--data-dir", metavar="DIR", help="where a named dataset's files are (default: the run's; else the "
                   "cache, where train downloads them)")
    p.add_argument("--data.download", dest="data.download", default=None, metavar="BOOL",
                   help="download a named dataset that is missing (default: false, unlike train's true: evaluate "
                   "never downloads unless told to, even for a run whose training did)")
    p.add_argument("--json", metavar="FILE", help="also write the figures to this FILE.json (replaced if it exists)")
    p.add_argument("--inception", action="store_true",
                   help="also compute Inception FID (needs torch-fidelity and its weights)")
    p.set_defaults(run=cmd_evaluate)


def evaluation_data(args, model=None) -> DataConfig:
    """What to score against: a run's own data (its config.data, so the same shape), or --data; --data-dir and
    --data.download apply to either. The bundled model's recorded folder is where it was trained, so not used."""
    data = model.config.data if model is not None and args.checkpoint else DataConfig()
    if args.data:
        data = dataclasses.replace(data, source=args.data, data_dir="")
    if args.data_dir:
        data = dataclasses.replace(data, data_dir=args.data_dir)
    download = getattr(args, "data.download")
    return apply_overrides(RunConfig(data=data), {"data.download": False if download is None else download}).data


def cmd_evaluate(args) -> int:
    import json
    import time

    from . import evaluation
    from .pipeline import load_model

    started = time.perf_counter()
    json_out = output_path(args.json, "--json", (".json",)) if args.json else None
    if json_out and args.samples:
        check_not_an_input(json_out, "--json", [("--samples", args.samples)])
    # The data, classifier and reference are made ready before any sample is drawn: a missing dataset or
    # an unscorable one is one sentence, not an error after minutes of sampling.
    if args.samples:
        if args.checkpoint:
            raise UserError("give either a checkpoint or --samples, not both.")
        images, labels = evaluation.load_samples_npz(args.samples)  # N x H x W x C
        evaluator = evaluation.Evaluator(evaluation_data(args), inception=args.inception,
                                         sample_shape=(images.shape[3], *images.shape[1:3]))
        info = {"source": str(args.samples)}
    else:
        model = load_model(args.checkpoint, args.device)
        net = model.config.net
        evaluator = evaluation.Evaluator(evaluation_data(args, model), inception=args.inception,
                                         sample_shape=(net.in_channels, net.image_size, net.image_size),
                                         model_classes=model.class_names)
        images, labels = run_sampling(args, model)
        sampler, steps, guidance = sampling_settings(args, model)
        info = {"source": str(model.source), "sampler": sampler, "steps": steps, "guidance": guidance}
    result = evaluator.score(images, labels)
    result.update(info, seconds=time.perf_counter() - started)
    print(evaluation.format_table(result))
    if json_out:
        with writing(json_out):
            atomic_write_bytes(json_out, (json.dumps(result, indent=2, default=float) + "\n").encode())
        print(f"wrote {json_out}")
    return 0


# --- demo ------------------------------------------------------------------------------------

def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="serve a local web page to sample, watch and edit images (needs the demo extra)",
                       description="Serve the demo page (Gradio; pip install -e \".[demo]\"): generate a grid, "
                       "watch the reverse process, run the forward process on a test image, inpaint, image to image "
                       "and interpolation. Its root URL serves the page; Ctrl-C stops it.")
    add_checkpoint(p)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on: 127.0.0.1 is reachable from this "
                   "machine only; 0.0.0.0 opens the page to the network")
    p.add_argument("--port", type=number(int, 1, 65535), default=7860, help="the port to listen on")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--data-dir", metavar="DIR", help="where the model's dataset is, for the forward-process test "
                   "images (default: where training put it; without it the model draws its own)")
    p.add_argument("--max-upload-mb", type=number(float, 0.01, 1024), default=10,
                   help="the largest upload the page accepts, in MB")
    p.set_defaults(run=cmd_demo)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.checkpoint, args.device, args.host, args.port, args.data_dir, args.max_upload_mb)
    return 0


# --- entry point -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tinydiffusion", description="Train, sample, draw and evaluate small diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train(sub)
    add_distill(sub)
    add_prepare(sub)
    add_cache(sub)
    add_sample(sub)
    add_export(sub)
    add_visualize(sub)
    add_inpaint(sub)
    add_img2img(sub)
    add_interpolate(sub)
    add_evaluate(sub)
    add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv[:1] == ["train-classifier"]:
            from . import evaluation

            return evaluation.main(argv, parser_class=Parser)
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130


def run() -> None:
    """The program (`tinydiffusion`, `python -m tinydiffusion`): main(), then exit with its status.

    After Ctrl-C the status is 130 and the process ends at once: interpreter shutdown could otherwise
    turn an interrupt caught mid-import back into a death by SIGINT (CPython remembers an interrupt that
    reached code run through PyRun_String, as some of torch's start-up is)."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
