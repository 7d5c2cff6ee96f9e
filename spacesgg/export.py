"""Convert stage-2 LLaVA records to the formats other trainers read.

    python -m spacesgg.export --records outputs/spacesgg/layer.json outputs/spacesgg/between.json --format sharegpt --output outputs/train.sharegpt.json --image-root data/synthetic_scenes/images

Formats:
  llava         one JSON list of the records as they are (several files joined)
  sharegpt      JSON list of {"id", "conversations": [{"from": "human"|"gpt", "value"}], "images": [path]}
                (LLaMA-Factory's ShareGPT layout; the <image> token stays where LLaVA put it)
  openai-jsonl  one line per record for OpenAI's chat fine-tuning: {"messages": [{"role": "user", "content":
                [{"type": "image_url", "image_url": {"url": data URI}}, {"type": "text", "text"}]}, {"role":
                "assistant", "content"}, ...]}; the image is embedded as a base64 data URI (needs --image-root or
                paths that exist), the <image> token dropped
  parquet       one row per record: id, image, conversations (list of {from, value}), prompt_function, backend,
                model; loads with datasets' load_dataset("parquet", data_files=...)
Every record is checked first, and one that cannot be trained on costs that record (one error line, exit 1):
its image not found (relative paths are joined to --image-root, LLaVA's --image_folder; an absolute path must
lie under it), a conversation that is not human/gpt turns in pairs, or an empty answer. Image paths are
written relative to --image-root. openai-jsonl embeds the stored pixel frame, as LLaVA's loader reads it:
a photo with an EXIF orientation is re-encoded as PNG without it (API servers would rotate it). Outputs are
written whole or not at all; with no record left nothing is written.
"""

import base64
import mimetypes
import sys
from pathlib import Path

from batchkit.batch import Tally, report
from batchkit.cli import make_parser, run_cli
from batchkit.errors import RecordError, UserError
from batchkit.files import atomic_path, check_output_file, read_json, write_json, write_jsonl
from spacesgg.benchmark import read_split
from spacesgg.io import image_header, stored_frame_png, warn_photo

FORMATS = ("llava", "sharegpt", "openai-jsonl", "parquet")
IMAGE_TOKEN = "<image>"
COLUMNS = ("id", "image", "prompt_function", "backend", "model")


def load_records(files):
    """The records of every file, in order; each checked to be a LLaVA record."""
    out = []
    for f in files:
        data = read_json(f, "records file")
        if not isinstance(data, list):
            raise UserError(f"{f}: expected a JSON list of LLaVA records (written by llm_based_query.py)")
        for k, record in enumerate(data):
            if not (isinstance(record, dict) and isinstance(record.get("conversations"), list)):
                raise UserError(f"{f}: item {k} is not a LLaVA record with \"conversations\"")
        out += data
    return out


def image_file(record, image_root):
    """The record's image file: its path joined to the image root (an absolute one must lie under the root)."""
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        raise RecordError(f"{record.get('id')}: no \"image\" path")
    path = Path(image)
    if image_root and path.is_absolute():
        try:
            path.resolve().relative_to(Path(image_root).resolve())
        except ValueError:
            raise RecordError(f"{record.get('id')}: image {path} is not under --image-root {image_root}") from None
    elif image_root:
        path = Path(image_root) / path
    if not path.is_file():
        raise RecordError(f"{record.get('id')}: image {path} not found" + ("" if image_root else
                          "; pass --image-root (LLaVA's --image_folder) for relative paths"))
    return path


def checked(record, image_root):
    """The record with its image path relative to the image root, after checking it can be trained on."""
    turns = record["conversations"]
    if not turns or len(turns) % 2:
        raise RecordError(f"{record.get('id')}: {len(turns)} conversation turns; LLaVA needs human/gpt pairs")
    for k, turn in enumerate(turns):
        role = "human" if k % 2 == 0 else "gpt"
        if not (isinstance(turn, dict) and turn.get("from") == role and isinstance(turn.get("value"), str)):
            raise RecordError(f"{record.get('id')}: turn {k} is not a {role} turn {{\"from\": \"{role}\", \"value\": text}}")
        if role == "gpt" and not turn["value"].strip():
            raise RecordError(f"{record.get('id')}: answer {k // 2 + 1} is empty")
    path = image_file(record, image_root)
    image = path.resolve().relative_to(Path(image_root).resolve()).as_posix() if image_root else record["image"]
    return dict(record, image=image), path


def sharegpt(record, path, image_root=None):
    image = str(Path(image_root) / record["image"]) if image_root else record["image"]
    return {"id": record["id"], "conversations": [{"from": t["from"], "value": t["value"]} for t in record["conversations"]],
            "images": [image]}


def openai_chat(record, path, image_root=None):
    data = stored_frame_png(path)                   # None: the file's own bytes are already the stored frame
    mime = "image/png" if data is not None else mimetypes.guess_type(path.name)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(data if data is not None else path.read_bytes()).decode('ascii')}"
    messages = []
    for k, turn in enumerate(record["conversations"]):
        text = turn["value"].replace(IMAGE_TOKEN, "").strip()
        if turn["from"] == "human":
            content = [{"type": "text", "text": text}]
            if k == 0:
                content.insert(0, {"type": "image_url", "image_url": {"url": url}})
            messages.append({"role": "user", "content": content})
        else:
            messages.append({"role": "assistant", "content": text})
    return {"messages": messages}


def write_parquet(path, records):
    import pyarrow as pa
    import pyarrow.parquet as pq
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    table = pa.table({**{c: pa.array([r.get(c) for r in records], pa.string()) for c in COLUMNS},
                      "conversations": pa.array([[{"from": t["from"], "value": t["value"]} for t in r["conversations"]]
                                                 for r in records], pa.list_(turn))})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def export(files, fmt, output, image_root=None, split=None):
    """Write the records of `files` in `fmt` to `output` (only those of the `split` keys' images); returns the exit code."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    output = check_output_file(output, "--output")
    if image_root and not Path(image_root).is_dir():
        raise UserError(f"--image-root {image_root}: folder not found")
    records = load_records(files)
    tally = Tally(f"export {fmt}")
    if split is not None:                    # records carry the image path; the split, annotation keys: match by file
        names = {Path(k).name for k in split}
        kept = [r for r in records if Path(str(r.get("image", ""))).name in names]
        tally.skipped, records = len(records) - len(kept), kept
    converted = []
    convert = {"llava": lambda r, path, root: r, "sharegpt": sharegpt, "openai-jsonl": openai_chat,
               "parquet": lambda r, path, root: r}[fmt]
    for record in records:
        try:
            record, path = checked(record, image_root)
            warn_photo(tally, path, image_header(path)[1])
            converted.append(convert(record, path, image_root))
            tally.done += 1
        except Exception as e:  # one bad record costs one record
            tally.fail_record(record.get("id", "?"), e)
    if not converted:
        report(f"error: no record left to export; {output} not written")
        tally.summary(f"0 records from {len(files)} files")
        return 1
    if fmt == "parquet":
        write_parquet(output, converted)
    elif fmt == "openai-jsonl":
        write_jsonl(output, converted)
    else:
        write_json(output, converted)
    tally.summary(f"{len(converted)} records from {len(files)} files to {output}")
    return tally.exit_code


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--records", nargs="+", required=True, help="LLaVA record files written by llm_based_query.py")
    p.add_argument("--format", required=True, choices=FORMATS, help="the output format (see above)")
    p.add_argument("--output", required=True, help="the file to write")
    p.add_argument("--image-root", default=None, help="the folder the records' image paths are relative to (LLaVA's --image_folder)")
    p.add_argument("--split", default=None, help="FILE:PART, e.g. outputs/benchmark/split.json:train: only records of that part's "
                                                 "images (matched by file name), so no benchmark image enters training")
    return p


def main(args):
    return export(args.records, args.format, args.output, args.image_root, read_split(args.split) if args.split else None)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
