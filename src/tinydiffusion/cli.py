"""Command line: `tinydiffusion train | prepare | sample | visualize | evaluate`. It only wires things together."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from .config import DataConfig, RunConfig, apply_overrides, config_fields
from .data import NAMED, canonical_source
from .errors import UserError
from .files import atomic_write_bytes
from .pipeline import DEFAULT_GUIDANCE
from .presets import NETWORKS, PRESETS, config_for_data, get_preset, preset_for_source
from .samplers import SAMPLERS


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one sentence, no usage dump
        self.exit(2, f"error: {message} (see '{self.prog} --help').\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


# --- train -----------------------------------------------------------------------------------

TRAIN_SHORTCUTS = {  # flag -> config field; the spellings scripts and docs rely on
    "--data": "data.source", "--data-dir": "data.data_dir", "--epochs": "train.epochs",
    "--max-steps": "train.max_steps", "--batch-size": "train.batch_size", "--seed": "train.seed", "--lr": "train.lr",
    "--checkpoint-every": "train.checkpoint_every", "--keep": "train.keep",
    "--device": "train.device",
}


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a diffusion model", description="Train a diffusion model. "
                       "Any config field can be set as --SECTION.FIELD VALUE (e.g. --train.lr 1e-3).")
    p.add_argument("--preset", help=f"starting config: {', '.join(PRESETS)} (default: the named dataset's own, "
                   "fashion-mnist without --data, or one chosen for the images' size)")
    p.add_argument("--run-dir", help="where checkpoints, samples and logs go (default runs/<preset>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--net", choices=list(NETWORKS), help="network: the UNet or a Transformer (dit = dit-s)")
    for flag, dotted in TRAIN_SHORTCUTS.items():
        p.add_argument(flag, dest=dotted, default=None, help=f"sets {dotted}")
    for dotted, _ in config_fields():
        p.add_argument(f"--{dotted}", dest=dotted, default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=cmd_train)


def cmd_train(args) -> int:
    from .checkpoint import CHECKPOINTS, load_config
    from .data import load_data
    from .training import train

    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    if args.resume:
        if args.net:
            raise UserError("a resumed run keeps its network; drop --net.")
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise UserError(f"{run_dir} is not a run directory (it has no config.json).")
        saved = load_config(run_dir / "config.json")
        config = apply_overrides(saved, overrides)
        if config.net != saved.net or config.diffusion != saved.diffusion:
            raise UserError("a resumed run keeps its network and diffusion settings; "
                            "start a new --run-dir to change them.")
        config.validate()
        dataset = load_data(config.data, "train", progress=not args.no_progress)
    else:
        source = str(overrides.get("data.source", "fashion-mnist"))
        if "data.source" in overrides:
            overrides["data.source"] = canonical_source(source)
        preset = args.preset or preset_for_source(source)
        if preset != "auto":
            get_preset(preset)  # an unknown name is refused before any work
        run_dir = Path(args.run_dir or f"runs/{args.preset or run_name(source)}")
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
    result = train(config, run_dir, resume=bool(args.resume), dataset=dataset, progress=not args.no_progress)
    if result.main_process:
        print(f"done: step {result.step}, final loss {result.final_loss:.4f}, {result.images_per_second:.0f} images/s, "
              f"{result.wall_seconds:.0f} s; checkpoints in {run_dir}")
    return 0


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
    p.add_argument("--data-dir", dest="data.data_dir", default=None, help="where a named dataset's files are")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for dotted in ("data.image_size", "data.channels", "data.alpha_background", "data.download"):
        p.add_argument(f"--{dotted}", dest=dotted, default=None, help=f"sets {dotted}")
    p.set_defaults(run=cmd_prepare)


def cmd_prepare(args) -> int:
    from .data import prepare_source

    out = Path(args.out)
    if out.suffix != ".npy":
        raise UserError(f"--out must end in .npy, not {out.name!r}.")
    if not out.parent.is_dir():
        raise UserError(f"the folder {out.parent} for --out does not exist.")
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    config = apply_overrides(RunConfig(data=DataConfig(source=args.source)), overrides)
    config.validate()
    prepare_source(config.data, out, progress=not args.no_progress)
    print(f"wrote {out} (use it with: tinydiffusion train --data {out})")
    return 0


# --- sample ----------------------------------------------------------------------------------

def add_sampling_options(p, default_num: int) -> None:
    p.add_argument("--num", type=_positive_int, default=default_num, help="number of images")
    p.add_argument("--sampler", default="dpmpp-2m", choices=list(SAMPLERS), help="sampler (default dpmpp-2m)")
    p.add_argument("--steps", type=_positive_int, help="sampling steps (default: the sampler's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="class to generate, by the model's class name or index (repeatable)")
    p.add_argument("--guidance", type=_non_negative_float, default=None,
                   help="classifier-free guidance scale (1 = plain conditional; default: the model's)")
    p.add_argument("--eta", type=_non_negative_float, default=None, help="DDIM noise (0 = deterministic)")
    p.add_argument("--spacing", choices=["leading", "trailing", "linspace"], default=None,
                   help="timestep spacing for ddpm/ddim/dpmpp-2m (default trailing)")
    p.add_argument("--batch-size", type=_positive_int, default=500)
    p.add_argument("--device", default="auto")


def sampler_options(args) -> dict:
    options = {}
    if args.eta is not None:
        if args.sampler != "ddim":
            raise UserError("--eta applies to the ddim sampler only.")
        options["eta"] = args.eta
    if args.spacing is not None:
        if args.sampler not in ("ddpm", "ddim", "dpmpp-2m"):
            raise UserError("--spacing applies to the ddpm, ddim and dpmpp-2m samplers only.")
        options["spacing"] = args.spacing
    return options


def sampling_settings(args, model) -> tuple[int, float]:
    """(steps, guidance) as they will be used: the flags, else the sampler's and the model's defaults."""
    from .samplers import DEFAULT_STEPS

    steps = args.steps or DEFAULT_STEPS[args.sampler] or model.diffusion.num_timesteps
    guidance = args.guidance if args.guidance is not None else (DEFAULT_GUIDANCE if model.num_classes else 1.0)
    return steps, guidance


def run_sampling(args, model, progress: bool = True, callback=None):
    from .pipeline import generate  # noqa: I001

    classes = [model.class_index(c) for c in args.classes] if args.classes else None
    steps, guidance = sampling_settings(args, model)
    return generate(model, args.num, classes=classes, sampler=args.sampler, steps=steps, guidance=guidance,
                    seed=args.seed, batch_size=args.batch_size, progress=progress, callback=callback,
                    **sampler_options(args))


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images", description="Generate images from a trained model "
                       "(default: the model bundled with the package).")
    p.add_argument("--checkpoint", help="a run directory, a checkpoint directory or a .safetensors file")
    add_sampling_options(p, default_num=64)
    p.add_argument("--out", default="samples.png", help="FILE.png (a grid) or FILE.npz (uint8 arr_0 N x H x W x C)")
    p.add_argument("--nrow", type=_positive_int, help="images per row in the PNG grid")
    p.set_defaults(run=cmd_sample)


def cmd_sample(args) -> int:
    from .evaluation.samples import save_npz
    from .pipeline import load_model
    from .viz import class_columns, save_grid, save_image

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npz"):
        raise UserError(f"--out must end in .png or .npz, not {out.name!r}.")
    if not out.parent.exists():
        raise UserError(f"the folder {out.parent} for --out does not exist.")
    model = load_model(args.checkpoint, args.device)
    images, labels = run_sampling(args, model)
    if out.suffix.lower() == ".npz":
        save_npz(out, images.numpy(), None if labels is None else labels.numpy(), model.class_names)
    elif args.classes is None and model.num_classes and args.num % model.num_classes == 0 and not args.nrow:
        save_image(class_columns(images, model.class_names), out)  # every class in turn: one column each, named
    else:
        save_grid(images, out, nrow=args.nrow)
    print(f"wrote {len(images)} images to {out}")
    return 0


# --- visualize -------------------------------------------------------------------------------

def add_visualize(sub) -> None:
    p = sub.add_parser("visualize", help="draw the forward or reverse diffusion process")
    which = p.add_subparsers(dest="what", required=True, parser_class=Parser)
    fwd = which.add_parser("forward", help="images noised at evenly spaced t from 0 to T")
    fwd.add_argument("--checkpoint", help="model whose noise schedule to use (default: bundled)")
    fwd.add_argument("--data-dir", help="where the model's named dataset is (default: where training put it)")
    fwd.add_argument("--num-images", type=_positive_int, default=4)
    fwd.add_argument("--columns", type=_positive_int, default=10)
    fwd.add_argument("--out", default="forward.png")
    fwd.set_defaults(run=cmd_visualize_forward)
    rev = which.add_parser("reverse", help="samples at several steps of the reverse process, and a GIF")
    rev.add_argument("--checkpoint", help="a run directory, a checkpoint directory or a .safetensors file")
    add_sampling_options(rev, default_num=8)
    rev.add_argument("--columns", type=_positive_int, default=10)
    rev.add_argument("--out", default="reverse.png")
    rev.add_argument("--gif", help="also write an animated GIF of the denoising to this file")
    rev.set_defaults(run=cmd_visualize_reverse)


def cmd_visualize_forward(args) -> int:
    from .checkpoint import load_config, resolve_checkpoint
    from .data import load_data
    from .diffusion import GaussianDiffusion
    from .viz import forward_strip, save_image

    if args.columns < 2:
        raise UserError("--columns must be at least 2.")
    _, config_path = resolve_checkpoint(args.checkpoint)
    config = load_config(config_path)
    data_config = dataclasses.replace(config.data, data_dir=args.data_dir) if args.data_dir else config.data
    data = load_data(data_config, "test") or load_data(data_config, "train")
    if data.labels is not None:  # one image of each class in turn
        picks = [int(np.argmax(data.labels.numpy() == c)) for c in range(len(data.class_names))
                 if (data.labels == c).any()][:args.num_images]
    else:
        picks = list(range(min(args.num_images, len(data))))
    image = forward_strip(GaussianDiffusion(config.diffusion), data.images[picks], args.columns)
    save_image(image, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_visualize_reverse(args) -> int:
    from .pipeline import load_model
    from .viz import ReverseRecorder, save_image

    if args.columns < 2:
        raise UserError("--columns must be at least 2.")
    model = load_model(args.checkpoint, args.device)
    recorder = ReverseRecorder()
    run_sampling(args, model, progress=False, callback=recorder)
    save_image(recorder.figure(args.columns), args.out)
    print(f"wrote {args.out}")
    if args.gif:
        recorder.save_gif(args.gif)
        print(f"wrote {args.gif}")
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
    p.add_argument("--data", help=f"score against this data: a named dataset ({', '.join(NAMED)}), a folder of "
                   "images, a .zip or an .npz/.npy (default: the run's own data; fashion-mnist with --samples)")
    p.add_argument("--data-dir", help="where a named dataset's files are (default: the run's; else the cache, "
                   "where train downloads them)")
    p.add_argument("--data.download", dest="data.download", default=None,
                   help="download a named dataset that is missing (default false)")
    p.add_argument("--json", help="also write the figures to this JSON file")
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
        steps, guidance = sampling_settings(args, model)
        info = {"source": str(model.source), "sampler": args.sampler, "steps": steps, "guidance": guidance}
    result = evaluator.score(images, labels)
    result.update(info, seconds=time.perf_counter() - started)
    print(evaluation.format_table(result))
    if args.json:
        atomic_write_bytes(Path(args.json), (json.dumps(result, indent=2, default=float) + "\n").encode())
        print(f"wrote {args.json}")
    return 0


# --- entry point -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tinydiffusion", description="Train, sample, draw and evaluate small diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train(sub)
    add_prepare(sub)
    add_sample(sub)
    add_visualize(sub)
    add_evaluate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train-classifier"]:
        from . import evaluation

        return evaluation.main(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
