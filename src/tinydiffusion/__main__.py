import sys

try:
    from .cli import run
except KeyboardInterrupt:  # Ctrl-C while Python is still importing: the same one line as later
    print("interrupted.", file=sys.stderr)
    sys.exit(130)

run()
