"""Stable shards: a batch split by name into N parts, the same on every machine and every run."""

import re
import zlib
from pathlib import Path

from .files import write_json

SHARD_RE = re.compile(r"^(?P<stem>.+)\.shard-(?P<i>\d+)-of-(?P<n>\d+)(?P<suffix>\.[^.]+)$")


def in_shard(name, shard):
    """Whether `name` (a stem, key or pair name) belongs to shard (I, N); everything does without a shard."""
    if shard is None:
        return True
    i, n = shard
    return zlib.crc32(str(name).encode("utf-8", "backslashreplace")) % n == i


def shard_path(path, shard):
    """X.json -> X.shard-I-of-N.json for a sharded run; unchanged without a shard."""
    if shard is None:
        return Path(path)
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{shard[0]}-of-{shard[1]}{path.suffix}")


SETTINGS_SUFFIX = ".settings.json"


def settings_path(output_file):
    """Where a sharded single-file output records the settings it was made with: X.shard-I-of-N.json.settings.json."""
    return Path(f"{output_file}{SETTINGS_SUFFIX}")


def input_name(path):
    """An input file's name as recorded in shard settings: its unsharded name (shard I of a chained stage reads
    shard I of the stage before), so that shards of runs over different inputs are never merged."""
    m = SHARD_RE.match(Path(path).name)
    return f"{m['stem']}{m['suffix']}" if m else Path(path).name


def record_shard_settings(output_file, shard, settings):
    """A sharded run writes its settings beside its output (before it), so merge refuses shards of other settings."""
    if shard is not None:
        write_json(settings_path(output_file), settings)
