"""Counts and lists in messages, in one place: "1 image", "2 images", "1 class", "1,000 steps", "a, b and c"."""

from __future__ import annotations

IRREGULAR = {"class": "classes", "process": "processes", "batch": "batches"}


def count(number: int, noun: str) -> str:
    """`number` and `noun`, plural unless the number is one: count(1, "step") -> "1 step"."""
    return f"{number:,} {noun if number == 1 else IRREGULAR.get(noun, noun + 's')}"


def listing(items) -> str:
    """Items joined as a sentence lists them: listing(["a", "b", "c"]) -> "a, b and c"."""
    items = [str(item) for item in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
