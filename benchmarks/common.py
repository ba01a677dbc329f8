"""What every benchmark shares: which machine ran it, how a call is timed, and how a report is written.

Torch-free, so that a script (and a test) importing it pays only for what it measures. One place each, so the
benchmarks' reports cannot drift apart: every CPU name in every report comes from `cpu_description()`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

from tinydiffusion.files import atomic_write_bytes

# --- the machine ---------------------------------------------------------------------------------

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # what decides whether bf16 autocast pays on a CPU


def lscpu_fields() -> dict[str, str]:
    """lscpu's "Key: value" lines (Model name, CPU(s), Flags, caches, ...) in the C locale; empty without lscpu."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                               env={**os.environ, "LC_ALL": "C"}).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {key.strip(): value.strip() for key, colon, value in (line.partition(":") for line in lines) if colon}


def _cpuinfo(key: str) -> str | None:
    """The first `key : value` line's value in /proc/cpuinfo; None where there is no such file or line."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.split(":", 1)[0].strip() == key)
    except (OSError, StopIteration):
        return None


def cpu_model() -> str:
    """Which CPU this is, by name: /proc/cpuinfo's model name, else lscpu's, else what Python's platform knows."""
    return _cpuinfo("model name") or lscpu_fields().get("Model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's instruction-set extensions (/proc/cpuinfo's flags, else lscpu's); empty where they are not known."""
    flags = _cpuinfo("flags")
    return (flags if flags is not None else lscpu_fields().get("Flags", "")).split()


def widest_vector(flags: list[str] | None = None) -> str:
    """The widest vector instructions, said so that their absence shows: "AVX-512", "AVX2, no AVX-512", "no AVX2"."""
    flags = cpu_flags() if flags is None else flags
    return "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"


def bf16_instructions(flags: list[str] | None = None) -> list[str]:
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in BF16_FLAGS if flag in flags]


def cpu_description(flags: list[str] | None = None) -> str:
    """The CPU in one line: model name, logical CPUs, widest vector instructions and any bf16 instructions,
    e.g. "AMD EPYC (2 CPUs, AVX2, no AVX-512)"."""
    flags = cpu_flags() if flags is None else flags
    bf16 = bf16_instructions(flags)
    return (f"{cpu_model()} ({os.cpu_count()} CPUs, {widest_vector(flags)}"
            + (f", bf16 instructions: {', '.join(bf16)}" if bf16 else "") + ")")


def machine_description() -> str:
    """The CPU and the OS, for the `machine:` line at the head of a report."""
    return f"{cpu_description()}, {platform.platform()}"


def machine_record(**extra) -> dict:
    """The `machine` entry of a JSON report: the CPU, logical CPUs, `extra` (torch's version, the device, ...),
    the date and the 1-minute load average now (a report adds `load_average_at_end` when it is done)."""
    return {"cpu": cpu_description(), "logical_cpus": os.cpu_count(), **extra,
            "date": datetime.now().astimezone().isoformat(timespec="minutes"),
            "load_average_at_start": os.getloadavg()[0]}


# --- timing --------------------------------------------------------------------------------------

def seconds_per_call(fn, calls: int, warmup: int = 0) -> list[float]:
    """Wall seconds of each of `calls` calls of fn(), after `warmup` calls that are not timed."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def median_seconds(fn, calls: int, warmup: int = 0) -> float:
    """The median wall time of `calls` calls of fn() after `warmup` untimed ones (load from elsewhere lengthens a
    few calls; the median ignores them)."""
    return statistics.median(seconds_per_call(fn, calls, warmup))


# --- reports -------------------------------------------------------------------------------------

def markdown_table(header, rows, align: str = "") -> list[str]:
    """A Markdown table as lines: the header, the alignment line (`align`: one letter a column, "l" or "r";
    columns it does not reach are left-aligned), then one line a row; cells are written with str()."""
    marks = [{"l": "---", "r": "---:"}[a] for a in align.ljust(len(header), "l")]

    def line(cells) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [line(header), line(marks), *(line(row) for row in rows)]


def text_table(rows, width: int = 12) -> list[str]:
    """A plain-text table for a terminal: the first column left-aligned, the others right-aligned, each at least
    `width` wide and as wide as its widest cell, two spaces apart."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(f"{cell:<{widths[0]}}" if i == 0 else f"{cell:>{max(width, widths[i])}}"
                      for i, cell in enumerate(map(str, row))) for row in rows]


def elapsed_at(run: Path) -> dict[int, float]:
    """Training seconds at each logged step, from the run's metrics.jsonl."""
    times = {}
    for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "elapsed_s" in record and "step" in record:
            times[record["step"]] = record["elapsed_s"]
    return times


def write_json(path, data: dict, **dumps) -> None:
    atomic_write_bytes(Path(path), (json.dumps(data, indent=2, **dumps) + "\n").encode())


def report(results: dict, summarize, format_markdown, json_path: str | None, markdown_path: str | None) -> None:
    """Summarise measurements, print the Markdown table, and write the JSON (with the summary) and table files."""
    summary = summarize(results)
    text = format_markdown(results, summary)
    print(text)
    if json_path:
        write_json(json_path, {**results, "summary": summary})
    if markdown_path:
        atomic_write_bytes(Path(markdown_path), text.encode())
