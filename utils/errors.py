"""Bad input is a UsageError: the CLI prints its message on one line and exits 2, no traceback."""
from __future__ import annotations

import functools
import sys


class UsageError(Exception):
    """A problem with the user's input (flags, files, directories). Message is one line."""


def cli_main(fn):
    """Decorate a script's main(): UsageError -> 'error: <msg>' on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except BrokenPipeError:  # the reader went away (`... | head`): not an error of ours
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(0)
        except KeyboardInterrupt:
            print("interrupted: finished work is on disk; re-run with --skip-existing to resume", file=sys.stderr)
            sys.exit(130)

    return wrapper
