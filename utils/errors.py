"""Bad input is a UsageError: the CLI prints its message on one line and exits 2, no traceback."""
from __future__ import annotations

import functools
import sys


class UsageError(Exception):
    """A problem with the user's input (flags, files, directories). Message is one line."""


class DivergenceError(UsageError):
    """A model whose numbers are not finite (a non-finite training loss or weights, non-finite signals): that
    model is refused, never scored; the other models of its pack and study go on (training/experiment.run_pack,
    training/study.run_local), and the study ends with the list of failed models. Message is one line;
    `finished`: the summaries of the models of the same pack that did finish (run_pack raises after them)."""

    def __init__(self, message: str, finished: list | None = None):
        super().__init__(message)
        self.finished = finished or []


class WriteError(UsageError):
    """A write refused by the system (no space left, no permission): the path and why, on one line
    (utils/io.atomic_path); `no_space` tells the caller it may add the space a model needs."""

    def __init__(self, message: str, no_space: bool = False):
        super().__init__(message)
        self.no_space = no_space


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
