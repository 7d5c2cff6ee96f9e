"""Batch bookkeeping: a progress bar, one `error:` line per bad record, a one-line summary.

Any exception raised while handling one record is that record's error: it is
reported in one line naming the record and the cause, counted, and the batch
goes on (`--debug` adds the traceback).
"""

import sys
import time
import traceback
from collections import Counter

from tqdm import tqdm

from .errors import Skipped, UserError
from .files import json_problem

DEBUG = {"on": False}          # set by the CLI runner from --debug


def printable(text):
    """Text that any terminal or log can take: invalid Unicode (lone surrogates from a JSON key) escaped."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def report(line):
    """One line on stderr that does not break a running progress bar."""
    tqdm.write(printable(line), file=sys.stderr)


def describe(name, error):
    """One line: the record's name and what went wrong with it."""
    if isinstance(error, UserError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}".rstrip(": ")
    text = " ".join(text.split())
    return text if text.startswith(str(name)) else f"{name}: {text}"


def traceback_text(error):
    return "".join(traceback.format_exception(error))


class Tally:
    """Counts done/skipped/failed items of a stage and prints its summary line."""

    def __init__(self, stage):
        self.stage = stage
        self.start = time.perf_counter()
        self.done = self.skipped = self.failed = 0
        self.counts = Counter()              # a stage's own tallies (objects left out, images not found, ...)
        self.warnings = Counter()            # kind -> items warned about (each reported once, on its own line)

    def fail(self, message, error=None):
        """Count and report one failure; `error` (an exception) gives the traceback under --debug."""
        self.failed += 1
        if error is not None and DEBUG["on"] and not isinstance(error, UserError):
            report(traceback_text(error).rstrip())
        report(f"error: {message}")

    def fail_record(self, name, error):
        self.fail(describe(name, error), error)

    def warn(self, kind, message):
        """One `warning:` line for one item, counted under `kind` in the summary line."""
        self.warnings[kind] += 1
        report(f"warning: {message}")

    def summary(self, extra=""):
        seconds = time.perf_counter() - self.start
        line = f"{self.stage}: {self.done} done, {self.skipped} skipped, {self.failed} failed"
        if extra:
            line += f", {extra}"
        if self.warnings:
            line += ", warnings: " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.warnings.items()))
        print(f"{line} in {seconds:.1f}s", flush=True)

    @property
    def exit_code(self):
        return 1 if self.failed else 0


def map_records(records, fn, tally, desc):
    """Apply `fn(key, record)` to every record with a progress bar; returns the output dict in input order.

    A record that raises Skipped is reported, counted as skipped and copied through. One that raises anything else fails (reported, counted) and is copied through unchanged, unless it
    cannot be written as strict JSON (NaN, infinity, invalid text), in which case it is left out of the output.
    """
    out = {}
    for key, record in tqdm(records.items(), desc=desc, unit="img"):
        try:
            result = fn(key, record)
            problem = json_problem(result)
            if problem:
                raise ValueError(f"output record {problem}")
            out[key] = result
            tally.done += 1
        except Skipped as e:
            report(f"skipped: {e}")
            tally.skipped += 1
            out[key] = record
        except Exception as e:  # one bad record costs one record
            tally.fail_record(key, e)
            if json_problem({key: record}) is None:
                out[key] = record
    return out
