"""Command line: `tinydiffusion train | distill | prepare | cache | sample | export | visualize | inpaint | img2img |
interpolate | evaluate | demo`, one module per command (as diffusers' commands/), each registering its sub-parser
(`add`) and doing its work (`run`); common.py holds what they share. This module only wires them together.

A command's module imports what its work needs (torch, the pipeline) inside `run`, so `--help` and argument errors
answer before that work's imports."""

from __future__ import annotations

import os
import sys

from ..errors import UserError
from . import (
    cache,
    demo,
    distill,
    evaluate,
    export,
    img2img,
    inpaint,
    interpolate,
    prepare,
    sample,
    train,
    visualize,
)
from .common import Parser
from .train import run_name

COMMANDS = (train, distill, prepare, cache, sample, export, visualize, inpaint, img2img, interpolate, evaluate, demo)


def build_parser() -> Parser:
    parser = Parser(prog="tinydiffusion", description="Train, sample, draw and evaluate small diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
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
    reached code run through PyRun_String, as some of torch's start-up is). A process of a torchrun job ends the
    same way: its files are written and closed by then, and the interpreter's teardown can wait forever on a process
    group's threads (training/distributed.leave_distributed)."""
    code = main()
    if code == 130 or os.environ.get("WORLD_SIZE", "1") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


__all__ = ["COMMANDS", "Parser", "build_parser", "main", "run", "run_name"]
