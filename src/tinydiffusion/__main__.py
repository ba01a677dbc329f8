import os
import sys

try:
    from .cli import run
except KeyboardInterrupt:  # Ctrl-C while Python is still importing: the same one line as later, and the same
    print("interrupted.", file=sys.stderr)  # immediate end as cli.run's (a normal exit could die by SIGINT instead)
    sys.stderr.flush()
    os._exit(130)

run()
