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
A record that cannot be converted (an image not found for openai-jsonl) costs that record: one error line.
"""

import base64
import mimetypes
import sys
from pathlib import Path

from batchkit.batch import Tally
from batchkit.cli import make_parser, run_cli
from batchkit.errors import RecordError, UserError
from batchkit.files import atomic_path, check_output_file, dumps, read_json, write_json

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
    path = Path(image_root) / record["image"] if image_root else Path(record["image"])
    if not path.is_file():
        raise RecordError(f"{record.get('id')}: image {path} not found; pass --image-root (LLaVA's --image_folder)")
    return path


def sharegpt(record, image_root=None):
    image = str(Path(image_root) / record["image"]) if image_root else record["image"]
    return {"id": record["id"], "conversations": [{"from": t["from"], "value": t["value"]} for t in record["conversations"]],
            "images": [image]}


def openai_chat(record, image_root=None):
    path = image_file(record, image_root)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
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


def export(files, fmt, output, image_root=None):
    """Write the records of `files` in `fmt` to `output`; returns the exit code."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    output = check_output_file(output, "--output")
    if image_root and not Path(image_root).is_dir():
        raise UserError(f"--image-root {image_root}: folder not found")
    records = load_records(files)
    tally = Tally(f"export {fmt}")
    converted = []
    convert = {"llava": lambda r, root: r, "sharegpt": sharegpt, "openai-jsonl": openai_chat, "parquet": lambda r, root: r}[fmt]
    for record in records:
        try:
            converted.append(convert(record, image_root))
            tally.done += 1
        except Exception as e:  # one bad record costs one record
            tally.fail_record(record.get("id", "?"), e)
    if fmt == "parquet":
        write_parquet(output, converted)
    elif fmt == "openai-jsonl":
        with atomic_path(output) as tmp:
            tmp.write_text("".join(dumps(r) + "\n" for r in converted), encoding="utf-8")
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
    return p


def main(args):
    return export(args.records, args.format, args.output, args.image_root)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
