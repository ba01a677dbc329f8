"""A score as a plain-text table: the metric's name, N and the reference are always in it."""

from __future__ import annotations

from .metrics import INCEPTION_METRIC


def format_table(result: dict) -> str:
    num = result["num"]
    rows = [(f"{result['metric']}, N={num:,}", f"{result['fd']:.3f}"),
            (f"  floor: N={result['fd_floor_num']:,} real train images", f"{result['fd_floor']:.3f}")]
    if "precision" in result:
        rows += [
            (f"precision (k={result['k']}), N={num:,}", f"{result['precision']:.3f}"),
            ("  floor: real train images", f"{result['precision_floor']:.3f}"),
            (f"recall (k={result['k']}), N={num:,}", f"{result['recall']:.3f}"),
            ("  floor: real train images", f"{result['recall_floor']:.3f}"),
        ]
    if "class_accuracy" in result:
        names = result.get("class_names") or [str(c) for c in range(len(result["per_class_accuracy"]))]
        rows.append((f"class accuracy, N={num:,}", f"{result['class_accuracy']:.3f}"))
        rows += [(f"  {name}", "-" if value is None else f"{value:.3f}")
                 for name, value in zip(names, result["per_class_accuracy"], strict=True)]
    if "inception_fid" in result:
        rows.append((f"{INCEPTION_METRIC}, N={num:,}", f"{result['inception_fid']:.3f}"))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>8}" for name, value in rows]
    lines.append(f"vs {result['reference']}; FD depends on N, so compare only at equal N.")
    lines += result.get("notes", [])
    if result.get("classifier"):
        lines.append(f"features: {result['classifier']}")
    return "\n".join(lines)
