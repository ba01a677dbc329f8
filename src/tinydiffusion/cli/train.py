"""`tinydiffusion train`: a run from a preset or the data, every config field a flag; and what `distill` shares
with it (a resumed run's config, a finished run, the run itself)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..bundled import MODELS
from ..config import DataConfig, RunConfig, config_fields
from ..data import canonical_source
from ..errors import UserError
from ..presets import NAMED_NETWORKS, PRESETS, get_preset
from ..run_configs import chosen_autoencoder, new_run, preset_for_source, resumed_run
from .common import field_help, metavar, overrides

SHORTCUTS = {  # flag -> config field; the spellings scripts and docs rely on
    "--data": "data.source", "--data-dir": "data.data_dir", "--epochs": "train.epochs",
    "--max-steps": "train.max_steps", "--batch-size": "train.batch_size", "--seed": "train.seed", "--lr": "train.lr",
    "--checkpoint-every": "train.checkpoint_every", "--keep": "train.keep",
    "--device": "train.device", "--autoencoder": "data.autoencoder",
}
DEFAULT_SOURCE = DataConfig().source
HELP_PRESET = preset_for_source(DEFAULT_SOURCE)  # whose values `train --help` shows as the defaults


def add(sub) -> None:
    p = sub.add_parser("train", help="train a diffusion model", description="Train a diffusion model. "
                       "Any config field can be set as --SECTION.FIELD VALUE (e.g. --train.lr 1e-3); all are "
                       f"listed below, with the {HELP_PRESET} preset's values as defaults (another --preset, "
                       "or --data, starts from other values).")
    p.add_argument("--preset", help=f"starting config: {', '.join(PRESETS)} (default: the named dataset's own, "
                   f"{DEFAULT_SOURCE} without --data, or one chosen for the images' size)")
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
    for flag, dotted in SHORTCUTS.items():
        p.add_argument(flag, dest=dotted, default=None, metavar=metavar(dotted, fields[dotted]),
                       help=f"same as --{dotted}: {field_help(preset, dotted, fields[dotted])}")
    groups = {}
    for dotted, f in fields.items():
        section = dotted.split(".")[0]
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section} settings")
        groups[section].add_argument(f"--{dotted}", dest=dotted, default=None, metavar=metavar(dotted, f),
                                     help=field_help(preset, dotted, f))
    p.set_defaults(run=run)


def run(args) -> int:
    from ..checkpoint import check_new_run_dir, load_config, resolve_checkpoint
    from ..data.latents import encode_dataset, load_training_data

    given = overrides(args)
    checkpoint = None
    if args.resume:
        config, run_dir, checkpoint = resumed_config(args, given)
        dataset = load_training_data(config.data, progress=not args.no_progress)
        if already_complete(config, run_dir, checkpoint, len(dataset)):
            return 0
    else:
        source = str(given.get("data.source", DEFAULT_SOURCE))
        if "data.source" in given:
            given["data.source"] = canonical_source(source)
        init, start = given.get("train.init"), None
        if init:  # a missing start, or one that is no checkpoint: refused before the data is read
            start = load_config(resolve_checkpoint(init, "--train.init")[1])
            given["train.init"] = init if init in MODELS else str(Path(init).resolve())  # a bundled model's name stays
        preset = args.preset or preset_for_source(source)
        if preset != "auto":
            get_preset(preset)  # an unknown name is refused before any work
        run_dir = Path(args.run_dir or f"runs/{args.preset or run_name(source)}")
        check_new_run_dir(run_dir, f"--resume {run_dir}")
        before_data = new_run(preset, args.net, given, start=start)  # every flag checked before any work
        dataset = load_training_data(before_data.data, progress=not args.no_progress)
        shape = _, h, w = dataset.images.shape[1:]
        autoencoder = chosen_autoencoder(preset, given, before_data.data, start, shape)
        speaks = os.environ.get("RANK", "0") == "0"  # under torchrun, one process says it
        if speaks and start is not None:
            if start.data.autoencoder:
                print(f"training in {start.data.autoencoder}'s latent space, as its start {init} does")
            elif chosen_autoencoder(preset, given, before_data.data, None, shape):  # scratch would be latent
                print(f"note: {init} is a pixel-space model, so this fine-tune trains on the {w}x{h} pixels, "
                      "several times slower a step than a run from scratch, which would diffuse in taef2's latents")
        if autoencoder:
            if speaks:
                print(f"training in {autoencoder}'s latent space, as colour images of {w}x{h} do by default "
                      "(--autoencoder none trains on the pixels)")
            given["data.autoencoder"] = autoencoder
            dataset = encode_dataset(dataset, new_run(preset, args.net, given, start=start).data,
                                     progress=not args.no_progress)
        classes = len(dataset.class_names) if dataset.labels is not None else 0
        config = new_run(preset, args.net, given, (tuple(dataset.images.shape[1:]), classes, len(dataset)),
                         name=run_dir.name, start=start)
    return run_training(args, config, run_dir, dataset, checkpoint)


def run_name(source: str) -> str:
    """A default run name from the data: `mnist`, `pets` for pets/ or pets.zip, `mnist-10k` for mnist-10k/train."""
    path = Path(source)
    name = path.name.removesuffix(".zip").removesuffix(".npz").removesuffix(".npy") or "run"
    return f"{path.parent.name}" if name.lower() in ("train", "training") and path.parent.name else name


def resumed_config(args, given: dict):
    """(config, run directory, checkpoint) of a run `--resume` continues: its saved config with the flags that
    may change (the train section's) applied; a flag that would be ignored is refused instead."""
    from ..checkpoint import load_config, resume_target

    if getattr(args, "net", None):
        raise UserError("a resumed run keeps its network; drop --net.")
    if getattr(args, "preset", None):
        raise UserError("--preset does not apply to --resume (a resumed run keeps its saved config); drop it.")
    # RUN (its latest checkpoint) or RUN/checkpoints/step-N (that one); a run in use is refused first
    run_dir, checkpoint = resume_target(args.resume)
    if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
        raise UserError(f"--run-dir {args.run_dir} is not the run --resume continues ({run_dir}); "
                        "a resumed run stays in its own directory, so drop --run-dir.")
    config, changed = resumed_run(load_config(run_dir / "config.json"), given)
    if changed:
        print(f"resuming with {', '.join(changed)}")
    return config, run_dir, checkpoint


def already_complete(config: RunConfig, run_dir: Path, checkpoint: Path | None, num_images: int) -> bool:
    """Whether the checkpoint a resume continues from is at the run's last step already: then that is said in one
    sentence and nothing is trained or written. The last step is the Trainer's: the steps a time budget planned,
    else train.max_steps, else train.epochs passes of whole batches; a budget not planned yet has none
    (tests/test_cli.py checks that such a resume takes no step)."""
    from ..checkpoint import CONFIG_FILE, latest_checkpoint, load_config, load_training_state
    from ..training.budget import budget_seconds, last_step

    found = checkpoint or latest_checkpoint(run_dir)
    if found is None:
        return False
    state = load_training_state(found)  # a damaged one is refused here
    step, spent = state["step"], state.get("budget_spent_s", 0.0)
    # The plan its checkpoint was saved under (a resume goes on from that), with this resume's limits
    saved = load_config(found / CONFIG_FILE).train
    train_cfg = dataclasses.replace(config.train, planned_steps=saved.planned_steps, planned_at=saved.planned_at)
    last = last_step(train_cfg, num_images // train_cfg.batch_size) or 0
    seconds = budget_seconds(train_cfg)
    if 0 < last <= step and saved.planned_steps:
        why = (f"its checkpoint is at step {step:,}, the end its time budget planned; to train it further, start a "
               f"new run from it with --train.init {run_dir}")
    elif 0 < last <= step:
        why = (f"its checkpoint is at step {step:,} of {last:,}, so there is nothing to train; resume with a higher "
               "--max-steps (or --epochs) to train it further")
    elif seconds and isinstance(spent, float) and spent >= seconds:
        why = (f"its time budget of {seconds:g} s is spent ({spent:.0f} s up to step {step:,}); resume with a "
               "larger --train.minutes to train it further")
    else:
        return False
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process says it
        print(f"{run_dir} is already complete: {why}.")
    return True


def run_training(args, config: RunConfig, run_dir: Path, dataset, checkpoint, net=None) -> int:
    from ..training import train

    result = train(config, run_dir, resume=bool(args.resume), dataset=dataset, progress=not args.no_progress,
                   checkpoint=checkpoint, net=net)
    if result.main_process:
        print(f"done: step {result.step:,}, final loss {result.final_loss:.4f}, {result.images_per_second:.0f} "
              f"images/s, {result.wall_seconds:.0f} s; checkpoints in {run_dir}")
    return 0
