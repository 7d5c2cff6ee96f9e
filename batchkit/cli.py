"""Command-line plumbing: a parser with one-line errors and --debug, number checks, and the runner.

`run_cli` turns a UserError into one `error:` line and exit 2, Ctrl-C into one
line and 130, SIGTERM into one line and 143 (temporary files removed on the
way out), and a bug into its traceback and exit 3.
"""

import argparse
import math
import signal
import sys

from .batch import DEBUG, traceback_text
from .errors import Terminated, UserError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and exit code 2."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def make_parser(doc, description):
    """A parser whose epilog is the exact example command from the script's docstring; it has --debug."""
    example = next((line.strip() for line in doc.splitlines() if line.strip().startswith(("python ", "bash "))), "")
    p = Parser(description=description, epilog=f"example: {example}" if example else None,
               allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of every error (for bug reports)")
    return p


def number(kind=float, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite `kind` within [low, high] (open ends where asked)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low:g}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"{text} must be {'<' if high_open else '<='} {high:g}")
        return value
    parse.__name__ = kind.__name__           # argparse names the type in its message
    return parse


positive_float = number(float, 0, low_open=True)
nonnegative_float = number(float, 0)
positive_int = number(int, 1)
nonnegative_int = number(int, 0)


def _terminate(signum, frame):
    raise Terminated


def run_cli(main, parser, argv=None):
    """Parse, run `main(args)`, and turn errors into one line and an exit code (see the module docstring)."""
    args = parser.parse_args(argv)
    DEBUG["on"] = bool(getattr(args, "debug", False))
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(main(args) or 0)
    except UserError as e:
        if DEBUG["on"]:
            print(traceback_text(e), file=sys.stderr, end="")
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated; rerun the same command to resume", file=sys.stderr)
        return 143
    except Exception as e:  # a bug: show it
        print(traceback_text(e), file=sys.stderr, end="")
        print(f"error: unexpected {type(e).__name__} (a bug; please report it with the traceback above)", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous)


def shard_arg(text):
    """--shard I/N: this task's share of a batch, 0 <= I < N (argparse type)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write the shard as I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return (i, n)


def add_shard_arg(p):
    """--shard I/N, defaulting to SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when a SLURM array runs us."""
    import os
    task, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
    default = shard_arg(f"{task}/{count}") if task and count else None
    p.add_argument("--shard", type=shard_arg, default=default,
                   help="I/N: do only this share of the work (a stable split by name), for N parallel tasks; single-file "
                        "outputs X.json become X.shard-I-of-N.json (join with python -m spacesgg.merge); default "
                        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set")
