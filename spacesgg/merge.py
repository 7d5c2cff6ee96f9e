"""Join the single-file outputs of a sharded run (X.shard-I-of-N.json) into X.json.

    python -m spacesgg.merge --output outputs/spacesgg/layers.json outputs/spacesgg/layers.shard-*-of-4.json

Every shard 0..N-1 of one N must be given exactly once, each made with the
same settings (recorded by the stage in X.shard-I-of-N.json.settings.json:
the input file's digest, prompt function, backend, model and every other
setting) and readable as JSON; otherwise nothing is written and one line says
why (exit 2). Annotation files (JSON objects keyed by image) are joined key
by key, a key in two shards being an error; record lists (stage 2) are
concatenated in shard order, and their records must agree on prompt
function, backend and model.
"""

import sys
from pathlib import Path

from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from batchkit.files import check_output_file, read_json, write_json
from batchkit.shards import SHARD_RE, settings_path

RECORD_FIELDS = ("prompt_function", "backend", "model")      # what every stage-2 record of one run shares


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
    if len({shards[i].name.split(".shard-")[0] for i in range(n)}) > 1:
        raise UserError("the shard files come from different outputs (" + ", ".join(sorted({shards[i].name for i in range(n)}))
                        + "); merge the shards of one output at a time")
    parts = [read_json(shards[i], "shard file") for i in range(n)]
    _same_settings([shards[i] for i in range(n)])
    if all(isinstance(p, list) for p in parts):
        _same_records(parts, [shards[i] for i in range(n)])
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


def _same_settings(files):
    """Every shard was made with the settings of shard 0 (or, for outputs of older runs, none recorded at all)."""
    recorded = [read_json(settings_path(f), "shard settings") if settings_path(f).is_file() else None for f in files]
    if all(r is None for r in recorded):
        return
    for f, settings in zip(files, recorded):
        if settings is None:
            raise UserError(f"{f}: no {settings_path(f).name} beside it, while other shards record their settings; "
                            "rerun this shard with the same command")
        if settings != recorded[0]:
            diff = ", ".join(f"{k}: {recorded[0].get(k)!r} vs {settings.get(k)!r}" for k in sorted(set(settings) | set(recorded[0]))
                             if settings.get(k) != recorded[0].get(k))
            raise UserError(f"{f}: made with other settings than {files[0].name} ({diff}); rerun it with the same command")


def _same_records(parts, files):
    """Stage-2 record lists: one prompt function, backend and model across the shards."""
    seen = {}
    for part, f in zip(parts, files):
        for record in part:
            if not isinstance(record, dict):
                raise UserError(f"{f}: holds an item that is not a record ({type(record).__name__})")
            values = tuple(record.get(k) for k in RECORD_FIELDS)
            if seen and values not in seen:
                first = next(iter(seen))
                raise UserError(f"{f}: record {record.get('id')!r} was made with {dict(zip(RECORD_FIELDS, values))}, "
                                f"{seen[first]} with {dict(zip(RECORD_FIELDS, first))}; merge the shards of one run")
            seen.setdefault(values, f.name)


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--output", required=True, help="the joined file to write")
    p.add_argument("files", nargs="+", help="the shard files X.shard-I-of-N.json, every I from 0 to N-1 once")
    return p


def main(args):
    return merge(args.files, args.output)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
