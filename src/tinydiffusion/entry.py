"""The program's entry point: the `tinydiffusion` console script (pyproject.toml) and `python -m tinydiffusion`.

This module imports nothing heavy (nor does the package's __init__), so Ctrl-C is handled from the moment it runs:
during the command line's imports (numpy, then torch: a second or more) as later, with one line and status 130.
"""

import os
import signal
import sys


def interrupted(signum=None, frame=None) -> None:
    """One line, then the end at once: a normal exit could turn an interrupt caught mid-import back into a death
    by SIGINT (cli.run)."""
    print("interrupted.", file=sys.stderr)
    sys.stderr.flush()
    os._exit(130)


def run() -> None:
    # A handler, not `except KeyboardInterrupt`: an import may catch the exception, but not this. Where SIGINT is
    # ignored (a shell's background job, nohup) it stays ignored.
    handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if handled:
        signal.signal(signal.SIGINT, interrupted)
    from .cli import run as command_line

    if handled:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt again, which cli.main handles
    command_line()
