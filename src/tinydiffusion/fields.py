"""Config fields that carry their help text: `train --help` lists every field from these, so it cannot drift.
Plain dataclass fields, no torch, so the network configs in nets/ and config.py share them cheaply."""

from dataclasses import field


def option(default, help: str):
    """A setting, with its help text."""
    return field(default=default, metadata={"help": help})


def recorded(default, help: str):
    """A field training fills in (what the run was trained on): in config.json, but not a setting."""
    return field(default=default, metadata={"help": help, "recorded": True})
