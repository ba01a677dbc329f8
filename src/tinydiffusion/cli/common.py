"""What the commands share: the parser whose errors are one sentence, checked numbers and output files, a config
field as a flag, the sampling flags (generated from the samplers' declared options), and the editing commands'
input and output."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..bounds import MAX_GUIDANCE, MAX_SEED, MAX_TIMESTEPS
from ..config import RunConfig, config_value
from ..defaults import DEFAULT_GUIDANCE, DEFAULT_SAMPLER
from ..errors import UserError
from ..files import check_apart, export_folder_files
from ..samplers import FLAGS, SAMPLERS
from ..words import count, listing

# Bounds on sampling options; memory is checked as well, before anything is allocated (pipeline.generate).
MAX_NUM = 10_000_000
MAX_BATCH = 100_000


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
    check_writable(path, flag)
    return path


def output_folder(text: str, flag: str, marker: str, inputs: list[Path]) -> Path:
    """Check an export's folder before any work: apart from the model's files it reads (`inputs`), new, empty, or
    one an earlier export wrote (files.check_apart and export_folder_files, which the export asks again as it
    writes), and its parent exists and is writable."""
    path = Path(text)
    check_apart(path, inputs, flag)
    export_folder_files(path, marker, flag)
    if not path.parent.is_dir():
        raise UserError(f"the folder {path.parent} for {flag} does not exist.")
    check_writable(path, flag)
    return path


def check_writable(path: Path, flag: str) -> None:
    """Can a file be made beside `path`? (Tried, since as root permission bits say nothing.)"""
    probe = path.parent / f".{path.name}.probe"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write {flag} into {path.parent} ({err.strerror or err}).") from None


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

    from ..devices import memory_of
    from ..nets.memory import format_bytes

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


# --- config fields as flags (--section.field) --------------------------------------------------

METAVARS = {"data.source": "SOURCE", "data.data_dir": "DIR", "train.device": "DEVICE"}  # else by the field's type


def overrides(args) -> dict[str, object]:
    """The config fields set on the command line, by dotted name ({"train.lr": "1e-3"})."""
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def field_help(preset: RunConfig, dotted: str, f: dataclasses.Field) -> str:
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


def metavar(dotted: str, f: dataclasses.Field) -> str:
    """One placeholder per kind of value, whichever command shows the option: SOURCE, DIR, N, X, BOOL, TEXT."""
    hint = str(f.type)
    if dotted in METAVARS:
        return METAVARS[dotted]
    return "N,N,..." if hint.startswith("tuple") else {"int": "N", "float": "X", "bool": "BOOL"}.get(hint, "TEXT")


# --- drawing: the checkpoint, the sampler and its options ------------------------------------------

def add_checkpoint(p, positional: bool = False) -> None:
    """--checkpoint (or export's positional RUN_OR_CHECKPOINT) and --model, which names a bundled model instead."""
    from ..bundled import DEFAULT_MODEL, MODELS

    what = "a run directory, a checkpoint directory or a .safetensors file (default: the bundled model --model names)"
    if positional:
        p.add_argument("checkpoint", nargs="?", metavar="RUN_OR_CHECKPOINT", help=what)
    else:
        p.add_argument("--checkpoint", help=what)
    p.add_argument("--model", choices=list(MODELS), help="a bundled model instead of --checkpoint (default: "
                   f"{DEFAULT_MODEL}): " + "; ".join(f"{m.name}, {m.about}" for m in MODELS.values()))


def model_source(args) -> str | None:
    """What a drawing command reads: --checkpoint, or the bundled model --model names (None: the default one), or
    with --fast that bundled model's student of --steps steps."""
    from ..bundled import bundled

    model, fast = getattr(args, "model", None), getattr(args, "fast", False)
    if args.checkpoint and model:
        raise UserError("give --checkpoint or --model, not both.")
    if fast:
        if args.checkpoint:
            raise UserError("--fast draws with a bundled model's student; drop --checkpoint (or --fast, to use that "
                            "one).")
        return str(bundled(model).student(args.steps))
    return args.checkpoint or model


def add_sampling_options(p, default_num: int) -> None:
    p.add_argument("--num", type=number(int, 1, MAX_NUM), default=default_num, help="number of images")
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="class to generate, by the model's class name or index (repeatable; default: every "
                   "class in turn)")
    add_sampler_options(p, "seed of the noise: a seed gives the same images at any --batch-size")
    p.add_argument("--guide", metavar="RUN_OR_CHECKPOINT", help="autoguidance (Karras et al. 2024): guide with this "
                   "weaker version of the model (an early checkpoint of its run, or a smaller run on the same data) "
                   "instead of its unconditional self; --guidance then scales the push away from the guide")
    p.add_argument("--batch-size", type=number(int, 1, MAX_BATCH), default=500,
                   help="images per network call; a smaller batch needs less memory, with the same images")


def add_sampler_options(p, seed_help: str) -> None:
    """The options every drawing command shares (sample, visualize, evaluate and the edits), from the samplers'
    registry: a sampler's own options are flags as samplers.FLAGS declares them, each saying which samplers take it."""
    p.add_argument("--sampler", default=None, choices=list(SAMPLERS),
                   help=f"sampler (default: {DEFAULT_SAMPLER}, or a distilled student's own)")
    own_steps = ", ".join(f"{name} {sampler.default_steps or 'T'}" for name, sampler in SAMPLERS.items())
    p.add_argument("--steps", type=number(int, 1, MAX_TIMESTEPS),
                   help=f"sampling steps (default: the sampler's own: {own_steps}, where T is the model's)")
    p.add_argument("--seed", type=number(int, 0, MAX_SEED), default=0, help=seed_help)
    p.add_argument("--guidance", type=number(float, 0, MAX_GUIDANCE), default=None,
                   help="classifier-free guidance scale: 1 is the plain conditional model, 0 the unconditional "
                   f"one (default: {DEFAULT_GUIDANCE} for class-conditional models, 1 for unconditional ones)")
    for option, (allowed, what) in FLAGS.items():
        takers = [name for name, sampler in SAMPLERS.items() if option in sampler.options()]
        default = SAMPLERS[takers[0]].options()[option]
        numeric = isinstance(default, (int, float))
        p.add_argument(f"--{option.replace('_', '-')}", dest=option, default=None,
                       type=number(type(default), *allowed) if numeric else None, choices=None if numeric else allowed,
                       help=f"{listing(takers)} only: {what} (default: {f'{default:g}' if numeric else default})")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:N")


def sampler_options(args) -> dict:
    """The sampler options given on the command line; generate() checks the sampler takes them."""
    return {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}


def sampling_flags(args) -> dict:
    """The sampling flags as pipeline.sampling_settings and generate() take them."""
    return {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "options": sampler_options(args)}


def run_sampling(args, model, progress: bool = True, callback=None):
    from ..checkpoint import resolve_checkpoint
    from ..pipeline import generate, load_model, sampling_settings

    classes = [model.class_index(c) for c in args.classes] if args.classes else None
    sampler, steps, guidance = sampling_settings(model, **sampling_flags(args))
    guide = None
    if getattr(args, "guide", None):
        resolve_checkpoint(args.guide, "--guide")  # a missing guide named by its flag
        guide = load_model(args.guide, args.device)
    return generate(model, args.num, classes=classes, sampler=sampler, steps=steps, guidance=guidance,
                    seed=args.seed, batch_size=args.batch_size, progress=progress, callback=callback, guide=guide,
                    **sampler_options(args))


# --- the editing commands (inpaint, img2img, interpolate) ------------------------------------------

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
    from ..editing import read_picture
    from ..pipeline import load_model

    out = output_path(args.out, "--out", (".png",))
    check_not_an_input(out, "--out", [("--image", args.image), *masks])
    pictures = [read_picture(args.image, "--image")] + [read_picture(path, flag) for flag, path in masks]
    return out, pictures, load_model(model_source(args), args.device)


def edit_settings(args, model, class_names: str | list[str] | None) -> dict:
    """The keywords every editing function takes from the flags: classes (indices of one --class NAME or several;
    None for none), sampler, steps, guidance, its options."""
    names = [class_names] if isinstance(class_names, str) else class_names
    return {"classes": [model.class_index(name) for name in names] if names else None, "sampler": args.sampler,
            "steps": args.steps, "guidance": args.guidance, **sampler_options(args)}


def write_edits(images, out: Path) -> None:
    """One picture as it is, or N variants as a grid; refused first if it cannot fit in memory."""
    from ..viz import grid_image, save_image

    check_figure_fits(images.numel() * 4, f"{count(len(images), 'picture')} of {images.shape[3]}x{images.shape[2]}",
                      "lower --num or use a smaller picture")
    with writing(out):
        save_image(grid_image(images, padding=0 if len(images) == 1 else 2), out)
    print(f"wrote {out}")
