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


PREEMPTED_EXIT = 75  # EX_TEMPFAIL of sysexits.h: a temporary failure, the same command continues the work


class Preempted(Exception):
    """Training stopped on SIGTERM (a scheduler's preemption, SLURM's time limit) after writing its resumable
    state at a step boundary (training/trainer.stop_on_sigterm). Not a UsageError: the CLI prints its line,
    how to continue (the same command with --skip-existing) and exits PREEMPTED_EXIT, not 2."""


def continue_command(argv: list[str]) -> str:
    """The command that continues a stopped run: this one, with --skip-existing."""
    import shlex

    args = list(argv) + ([] if "--skip-existing" in argv else ["--skip-existing"])
    return f"python {shlex.join(args)}"


def cli_main(fn):
    """Decorate a script's main(): UsageError -> 'error: <msg>' on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Preempted as e:
            print(f"preempted: {e}; continue with: {continue_command(sys.argv)}", file=sys.stderr)
            sys.exit(PREEMPTED_EXIT)
        except BrokenPipeError:  # the reader went away (`... | head`): not an error of ours
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(0)
        except KeyboardInterrupt:
            print("interrupted: finished work is on disk; re-run with --skip-existing to resume", file=sys.stderr)
            sys.exit(130)

    return wrapper
