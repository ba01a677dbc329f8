"""`tinydiffusion distill`: a student that samples in 1 to 4 steps, trained from a teacher
(training/distillation.py)."""

from __future__ import annotations

from pathlib import Path

from ..config import config_fields
from ..defaults import STUDENT_STEPS
from ..errors import UserError
from ..run_configs import student_defaults, student_run
from .common import field_help, metavar, overrides
from .train import SHORTCUTS, already_complete, resumed_config, run_training

DISTILL_SHORTCUTS = {flag: dotted for flag, dotted in SHORTCUTS.items() if flag != "--epochs"}


def add(sub) -> None:
    p = sub.add_parser("distill", help="distill a trained model into a student that samples in 1 to 4 steps",
                       description="Distill a teacher into a student that takes --steps steps, each one "
                       "network evaluation with guidance folded in (training/distillation.py). The student is a run "
                       "directory like any other: sample, evaluate and generate() use its own sampler and steps. "
                       "It trains on the teacher's data (--data-dir, or --data, where it lies now), and resumes, stops "
                       "on a signal "
                       "and runs under torchrun as training does.")
    p.add_argument("--teacher", help="the teacher: a run directory, a checkpoint or a .safetensors file, or a "
                   "trajectory student, whose steps the new student shortcuts (default: the bundled model)")
    p.add_argument("--steps", "--student-steps", dest="distill.steps", type=int, choices=STUDENT_STEPS, default=None,
                   metavar="K", help=f"the student's own sampling steps, {', '.join(map(str, STUDENT_STEPS[:-1]))} or "
                   f"{STUDENT_STEPS[-1]}, each one network evaluation with guidance folded in (not a sampler's steps, "
                   "as sample --steps; --student-steps is the same option) (default: 4, or half a student teacher's "
                   "steps: a round of progressive distillation)")
    p.add_argument("--run-dir", help="where the student goes (default: runs/<teacher's name>-student-<steps>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a distillation from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    fields, every_field = dict(config_fields(("train", "distill"))), dict(config_fields())
    defaults = student_defaults()
    for flag, dotted in DISTILL_SHORTCUTS.items():
        p.add_argument(flag, dest=dotted, default=None, metavar=metavar(dotted, every_field[dotted]),
                       help=f"same as --{dotted}")
    p.add_argument("--epochs", dest="train.epochs", default=None, metavar="N",
                   help="passes over the teacher's data (default: 1)")
    group = p.add_argument_group("distillation and training settings (the train section's defaults are a "
                                 "fine-tuning's)")
    for dotted, f in fields.items():
        if dotted not in ("distill.steps", "distill.teacher"):
            group.add_argument(f"--{dotted}", dest=dotted, default=None, metavar=metavar(dotted, f),
                               help=field_help(defaults, dotted, f))
    p.set_defaults(run=run)


def run(args) -> int:
    from ..checkpoint import check_new_run_dir, resolve_checkpoint
    from ..data.latents import load_training_data
    from ..files import sha256_file
    from ..pipeline import load_model
    from ..training.distillation import starting_network

    given = overrides(args)
    if args.resume:
        if args.teacher:
            raise UserError("a resumed distillation keeps its teacher; drop --teacher.")
        config, run_dir, checkpoint = resumed_config(args, given)
        dataset = load_training_data(config.data, progress=not args.no_progress)
        if already_complete(config, run_dir, checkpoint, len(dataset)):
            return 0
        return run_training(args, config, run_dir, dataset, checkpoint)
    teacher_weights, _ = resolve_checkpoint(args.teacher, "--teacher")
    teacher = load_model(args.teacher, device="cpu")
    config = student_run(teacher.config, teacher_weights, sha256_file(teacher_weights), given)
    run_dir = Path(args.run_dir or f"runs/{config.name}")
    check_new_run_dir(run_dir, f"tinydiffusion distill --resume {run_dir}")
    start = starting_network(config, teacher.net)  # a bad distill.init is refused before the data is read
    dataset = load_training_data(config.data, progress=not args.no_progress)
    return run_training(args, config, run_dir, dataset, None, net=start)
