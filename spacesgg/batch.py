"""Batch bookkeeping: a progress bar, bad records reported in one line each, a one-line summary."""

import sys
import time

from tqdm import tqdm

from .errors import RecordError


def report(line):
    """One line on stderr that does not break a running progress bar."""
    tqdm.write(line, file=sys.stderr)


class Tally:
    """Counts done/skipped/failed items of a stage and prints its summary line."""

    def __init__(self, stage):
        self.stage = stage
        self.start = time.perf_counter()
        self.done = self.skipped = self.failed = 0

    def fail(self, message):
        self.failed += 1
        report(f"error: {message}")

    def summary(self, extra=""):
        seconds = time.perf_counter() - self.start
        line = f"{self.stage}: {self.done} done, {self.skipped} skipped, {self.failed} failed"
        if extra:
            line += f", {extra}"
        print(f"{line} in {seconds:.1f}s", flush=True)

    @property
    def exit_code(self):
        return 1 if self.failed else 0


def map_records(records, fn, tally, desc):
    """Apply `fn(key, record)` to every record with a progress bar.

    A RecordError fails that record (reported, counted, copied through unchanged);
    the batch goes on. Returns the output dict in input order.
    """
    out = {}
    for key, record in tqdm(records.items(), desc=desc, unit="img"):
        try:
            out[key] = fn(key, record)
            tally.done += 1
        except RecordError as e:
            tally.fail(str(e))
            out[key] = record
    return out
