"""How much memory data may take: the one rule for reading an array in rather than memory-mapping it, and for
refusing an array that could only be read in and would not fit."""

from __future__ import annotations

import os


def default_memory_limit() -> int:
    """Half the memory this process can have (the machine's, or less under `ulimit -v`): a larger prepared array
    is memory-mapped rather than read in."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            total = min(total, soft)
    except (ImportError, ValueError, OSError):  # not POSIX
        pass
    return total // 2
