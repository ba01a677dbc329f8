"""Config fields that carry their help text: `train --help` lists every field from these, so it cannot drift.
Plain dataclass fields, no torch, so the network configs in nets/ and config.py share them cheaply."""

from collections.abc import Callable
from dataclasses import dataclass, field


def option(default, help: str):
    """A setting, with its help text."""
    return field(default=default, metadata={"help": help})


def recorded(default, help: str):
    """A field training fills in (what the run was trained on): in config.json, but not a setting."""
    return field(default=default, metadata={"help": help, "recorded": True})


@dataclass(frozen=True)
class Choice:
    """One entry of a registry that a config field names (schedules, time draws, loss weightings): the function
    that does the work, and a phrase of help for `--help`."""
    run: Callable
    help: str


def choices_help(registry: dict[str, Choice]) -> str:
    """A registry's entries for a field's help: "a (its help), b (its help), or c (its help)"."""
    entries = [f"{name} ({choice.help})" for name, choice in registry.items()]
    return entries[0] if len(entries) == 1 else f"{', '.join(entries[:-1])}, or {entries[-1]}"
