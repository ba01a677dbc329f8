"""Class names: a class by its name, alias or index, in one sentence when there is none."""

from __future__ import annotations

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
