"""Class names: a class by its name, alias or index, in one sentence when there is none; the first images of each
class."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .named import NAMED


def class_index(name_or_index: str, class_names: tuple[str, ...], aliases: dict[str, str] | None = None) -> int:
    """'sneaker', 'Sneaker' or '7' -> 7; an unknown name lists the valid ones."""
    if not class_names:
        raise UserError("this model is unconditional (it was trained without classes); drop --class.")
    text = str(name_or_index).strip()
    lowered = {n.lower(): i for i, n in enumerate(class_names)}
    if text.lower() in lowered:
        return lowered[text.lower()]
    if text.isdigit() and int(text) < len(class_names):
        return int(text)
    normalized = text.lower().replace("_", "-").replace(" ", "-").replace("/", "-")
    normalized = (aliases or {}).get(normalized, normalized)
    if normalized in lowered:
        return lowered[normalized]
    raise UserError(f"unknown class {name_or_index!r}; choose one of {', '.join(class_names)} "
                    f"or an index 0-{len(class_names) - 1}.")


def class_aliases(source: str) -> dict[str, str]:
    named = NAMED.get(source.strip().lower())
    return named.class_aliases if named else {}


def first_of_each_class(labels, num_classes: int, per_class: int = 1) -> list[int]:
    """Indices of the first `per_class` images of each class in turn (class 0's, then class 1's, ...); a class
    with no image is skipped. The figures and the demo show one image of each class."""
    labels = np.asarray(labels)
    return [int(i) for c in range(num_classes) for i in np.flatnonzero(labels == c)[:per_class]]
