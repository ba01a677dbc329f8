"""`tinydiffusion train-classifier` (not listed): the maintainers' command that trains the bundled FD classifier.
Its arguments are those of `python -m tinydiffusion.evaluation train-classifier` (evaluation/command.py), which
parses them: this parser hands them over whole, so there is one definition of them."""

from __future__ import annotations

import argparse

NAME = "train-classifier"


def add(sub) -> None:
    # No help= (so the command list leaves it out) and no option prefix (so every argument, --help included, is
    # collected for the evaluation's own parser).
    p = sub.add_parser(NAME, add_help=False, prefix_chars="\0")
    p.add_argument("arguments", nargs=argparse.REMAINDER)
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import evaluation
    from .common import Parser

    return evaluation.main([NAME, *args.arguments], parser_class=Parser)
