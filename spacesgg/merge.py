"""Join the single-file outputs of a sharded run (X.shard-I-of-N.json) into X.json.

    python -m spacesgg.merge --output outputs/spacesgg/layers.json outputs/spacesgg/layers.shard-*-of-4.json

Every shard 0..N-1 of one N must be given exactly once (a missing or
duplicated shard is refused, nothing is written). Annotation files (JSON
objects keyed by image) are joined key by key, a key in two shards being an
error; record lists (stage 2) are concatenated in shard order.
"""

import sys
from pathlib import Path

from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from batchkit.files import check_output_file, read_json, write_json
from batchkit.shards import SHARD_RE


def merge(files, output):
    """Write the join of the shard files to `output`; returns the exit code."""
    output = check_output_file(output, "--output")
    shards = {}
    counts = set()
    for f in files:
        m = SHARD_RE.match(Path(f).name)
        if not m:
            raise UserError(f"{f}: not a shard file (NAME.shard-I-of-N.json)")
        i, n = int(m["i"]), int(m["n"])
        counts.add(n)
        if i in shards:
            raise UserError(f"{f}: shard {i} of {n} given twice ({shards[i]}); give each shard once")
        shards[i] = Path(f)
    if len(counts) != 1:
        raise UserError(f"the files come from runs of different shard counts ({', '.join(map(str, sorted(counts)))})")
    n = counts.pop()
    missing = sorted(set(range(n)) - set(shards))
    if missing:
        raise UserError(f"shard {missing[0]} of {n} is missing ({len(missing)} missing); run it, then merge again")
    parts = [read_json(shards[i], "shard file") for i in range(n)]
    if all(isinstance(p, dict) for p in parts):
        joined = {}
        for i, part in enumerate(parts):
            for key, value in part.items():
                if key in joined:
                    raise UserError(f"{shards[i]}: record {key!r} is in another shard too; shards must not overlap")
                joined[key] = value
    elif all(isinstance(p, list) for p in parts):
        joined = [item for part in parts for item in part]
    else:
        raise UserError("the shard files mix JSON objects and lists; merge the files of one output at a time")
    write_json(output, joined)
    print(f"merge: {n} shards, {len(joined)} records into {output}")
    return 0


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--output", required=True, help="the joined file to write")
    p.add_argument("files", nargs="+", help="the shard files X.shard-I-of-N.json, every I from 0 to N-1 once")
    return p


def main(args):
    return merge(args.files, args.output)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
