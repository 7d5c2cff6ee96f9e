"""Stable shards: a batch split by name into N parts, the same on every machine and every run."""

import re
import zlib
from pathlib import Path

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
