"""Ask a VLM the benchmark's questions and write its answers for the scorer.

    python -m spacesgg.ask --benchmark outputs/benchmark/benchmark.jsonl --image-root data/synthetic_scenes/images --output outputs/benchmark/template.jsonl --backend template --anno-file outputs/spacesgg/multiview.json

Backends:
  openai    any OpenAI-compatible VLM server (--model NAME, --base-url, the key from OPENAI_API_KEY): each item's
            image (the stored pixel frame, as a data URI) and question, with stage 2's machinery: --concurrency,
            a total deadline per request (--timeout), retries with backoff, Retry-After honoured
  local     a transformers VLM of the spatial-ID registry (--model ALIAS or ALIAS=DIR): batched greedy generation,
            --max-new-tokens, --batch-size
  template  answers in words from the geometry itself (the stage-1.3 --anno-file; for grid items, the pasted boxes):
            a sanity check of the benchmark and the scorer, which must score it perfect
Writes OUTPUT, one {"id", "prediction"} a line, in the benchmark's order. Answers are appended to
OUTPUT.cache.jsonl as they arrive, so a rerun of the same command asks only what is not answered yet.
"""

import asyncio
import base64
import hashlib
import json
import sys

from PIL import Image
from tqdm import tqdm

from batchkit.batch import Tally, printable, report
from batchkit.cli import make_parser, positive_float, positive_int, run_cli
from batchkit.errors import RecordError, UserError
from batchkit.files import check_input_dir, check_output_file, write_jsonl
from batchkit.models import DEVICES, DTYPES
from spacesgg.annotations import load_annotations
from spacesgg.backends import LLMSettings, OpenAIBackend, RequestFailed, run_requests
from spacesgg.benchmark import QUALITATIVE
from spacesgg.export import image_file
from spacesgg.io import read_photo, stored_frame_png
from spacesgg.llm_query import Cache
from spacesgg.prompt_functions.base import direction
from spacesgg.score import read_jsonl
from spacesgg.tags import box_text, normalise_box, ref_tag

ASK_BACKENDS = ("openai", "local", "template")
DEFAULT_MAX_NEW_TOKENS = 64
LLM = LLMSettings()


def item_key(model, item):
    """The cache key of one question to one model: what was asked, about which image."""
    payload = json.dumps([model, item["id"], item["question"], item["image"]], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def data_uri(path):
    """The image as a data URI of its stored frame (re-encoded as PNG where an EXIF orientation would turn it)."""
    stored = stored_frame_png(path)
    if stored is not None:
        return "data:image/png;base64," + base64.b64encode(stored).decode("ascii")
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class GeometryAnswerer:
    """Answers in words from the stage-1.3 geometry (and, for grid items, the pasted boxes): never from the item's answer."""

    def __init__(self, anno_file=None):
        self.records = load_annotations(anno_file) if anno_file else {}

    def _objects(self, item):
        record = self.records.get(item["source"]["key"])
        if not isinstance(record, dict):
            raise RecordError(f"{item['id']}: {item['source']['key']} is not in --anno-file")
        found = {}
        for tag, wanted in item["objects"].items():
            ids = [oid for oid, obj in record["objects"].items() if isinstance(obj, dict) and obj.get("label", "").strip()
                   == wanted["label"] and [float(v) for v in obj.get("box", [])] == wanted["box"]]
            if not ids:
                raise RecordError(f"{item['id']}: object {wanted['label']} {wanted['box']} is not in the record")
            found[tag] = ids[0]
        return record, found

    def answer(self, item):
        kind = item["type"]
        if item["source"].get("view") == "grid":
            a, b = item["objects"]["A"], item["objects"]["B"]
            axis = QUALITATIVE[kind][0]
            centre = [(b["box"][k] + b["box"][k + 2]) / 2 - (a["box"][k] + a["box"][k + 2]) / 2 for k in (0, 1)]
            return f"{item['choices'][int(centre[axis] > 0)]}"
        record, ids = self._objects(item)
        objects = record["objects"]
        if kind in QUALITATIVE:
            a, b = ids["A"], ids["B"]
            axis = QUALITATIVE[kind][0]
            rel = record["views"][item["source"]["view"]]["relations"][f"{a}>{b}"]
            return f"The {objects[a]['label']} is {direction(axis, rel[axis]).phrase} the {objects[b]['label']}."
        if kind == "distance":
            d = sum((p - q) ** 2 for p, q in zip(objects[ids["A"]]["centre"], objects[ids["B"]]["centre"])) ** 0.5
            return f"They are about {d:.2f} metres apart."
        if kind == "camera_distance":
            return f"It is about {sum(v * v for v in objects[ids['A']]['centre']) ** 0.5:.2f} m from the camera."
        if kind in ("width", "height"):
            value = objects[ids["A"]]["extent"][0 if kind == "width" else 1]
            return f"It is about {value * 100:.0f} cm {'wide' if kind == 'width' else 'tall'}."
        width, height = record["image_size"]
        tags = {oid: normalise_box(objects[oid]["box"], width, height) for oid in ids.values()}
        sentences = []
        for name, rel in record["views"]["front"]["relations"].items():
            a, b = name.split(">")
            if a < b and a in tags and b in tags:
                for axis, r in enumerate(rel):
                    if r:
                        sentences.append(f"{ref_tag(objects[a]['label'].strip(), tags[a])} <pred>{direction(axis, r).predicate}"
                                         f"</pred>{box_text(tags[a])}{box_text(tags[b])} {ref_tag(objects[b]['label'].strip(), tags[b])}.")
        return " ".join(sentences)


def _ask_openai(todo, settings, image_root, cache, concurrency, max_tokens, tally):
    backend = OpenAIBackend(settings)

    async def run():
        semaphore = asyncio.Semaphore(concurrency)

        async def one(item, key):
            async with semaphore:
                try:
                    path = image_file(item, image_root)
                except RecordError as e:
                    raise RequestFailed(str(e)) from None
                content = [{"type": "image_url", "image_url": {"url": data_uri(path)}},
                           {"type": "text", "text": item["question"]}]
                reply = await backend.chat([{"role": "user", "content": content}], item["id"], max_tokens)
                cache.add({"key": key, "id": item["id"], "prediction": reply.text,
                           "usage": [reply.prompt_tokens, reply.completion_tokens]})
                tally.done += 1

        await run_requests([one(item, key) for item, key in todo], backend, lambda e: tally.fail(str(e)), "ask", "q")
    asyncio.run(run())


def _ask_local(todo, model, model_path, device, dtype, image_root, cache, batch_size, max_new_tokens, tally):
    from spatial_id.generate import Answerer
    from spatial_id.registry import resolve_model
    answerer = Answerer(resolve_model(model, model_path), device, dtype)
    with tqdm(total=len(todo), desc="ask", unit="q") as bar:
        for start in range(0, len(todo), batch_size):
            batch, images = [], []
            for item, key in todo[start:start + batch_size]:
                try:
                    images.append(read_photo(image_file(item, image_root))[0])
                    batch.append((item, key))
                except RecordError as e:
                    tally.fail(str(e))
            if batch:
                answers = answerer.answer([Image.fromarray(im) for im in images], [i["question"] for i, _ in batch],
                                          max_new_tokens)
                for (item, key), text in zip(batch, answers):
                    cache.add({"key": key, "id": item["id"], "prediction": text})
                    tally.done += 1
            bar.update(len(todo[start:start + batch_size]))


def ask(benchmark, output, backend="template", model=None, image_root=None, anno_file=None, settings=LLM,
        concurrency=8, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, batch_size=8, device="auto", dtype="auto", model_path=None,
        limit=None):
    """Answer every benchmark item not answered yet; write OUTPUT; returns the exit code."""
    if backend not in ASK_BACKENDS:
        raise UserError(f"--backend {backend!r}: one of {', '.join(ASK_BACKENDS)}")
    if backend == "local" and not model:
        raise UserError("--backend local needs --model ALIAS (or ALIAS=DIR for a downloaded snapshot)")
    output = check_output_file(output, "--output")
    check_input_dir(image_root, "--image-root")
    tally = Tally("ask")
    items, seen = [], set()
    for item in read_jsonl(benchmark, "benchmark", tally):
        name = item.get("id")
        if not isinstance(name, str) or name in seen or not isinstance(item.get("question"), str) \
                or not isinstance(item.get("image"), str) or not item.get("image"):
            tally.fail(f"{benchmark}: item {printable(name)}: " + ("given twice" if name in seen else
                                                                 "no id, question or image"))
            continue
        seen.add(name)
        items.append(item)
    items = items[:limit] if limit else items
    name = {"openai": settings.model, "local": f"{model}|{model_path or ''}", "template": "template"}[backend]
    cache = Cache(f"{output}.cache.jsonl")
    keyed = [(item, item_key(name, item)) for item in items]
    todo = [(item, key) for item, key in keyed if key not in cache.entries]
    tally.skipped = len(keyed) - len(todo)
    print(f"ask: {len(items)} questions, {tally.skipped} answered before, {backend} backend"
          + (f", model {model or settings.model}" if backend != "template" else ""), flush=True)
    try:
        if backend == "template":
            answerer = GeometryAnswerer(anno_file)
            for item, key in tqdm(todo, desc="ask", unit="q"):
                try:
                    cache.add({"key": key, "id": item["id"], "prediction": answerer.answer(item)})
                    tally.done += 1
                except Exception as e:  # one item costs one item
                    tally.fail_record(item["id"], e)
        elif backend == "openai":
            _ask_openai(todo, settings, image_root, cache, concurrency, max_new_tokens, tally)
        else:
            _ask_local(todo, model, model_path, device, dtype, image_root, cache, batch_size, max_new_tokens, tally)
    finally:
        cache.close()
    rows = [{"id": item["id"], "prediction": cache.entries[key]["prediction"]} for item, key in keyed if key in cache.entries]
    write_jsonl(output, rows)
    if len(rows) < len(items):
        report(f"warning: {len(items) - len(rows)} questions have no answer yet; rerun the same command to ask them")
    tally.summary(f"{len(rows)} answers in {output}")
    return tally.exit_code


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--benchmark", required=True, help="benchmark.jsonl (python -m spacesgg.benchmark)")
    p.add_argument("--output", required=True, help="the predictions file to write (JSONL of {\"id\", \"prediction\"})")
    p.add_argument("--image-root", default=None, help="the folder the items' image paths are relative to")
    p.add_argument("--backend", choices=ASK_BACKENDS, default="template", help="who answers (see above; default %(default)s)")
    p.add_argument("--model", default=None, help="openai: the model name on the server; local: a registry alias or ALIAS=DIR")
    p.add_argument("--model-path", default=None, help="local: a snapshot folder that replaces the alias's hub id")
    p.add_argument("--anno-file", default=None, help="template: the stage-1.3 annotation file the benchmark was made from")
    p.add_argument("--base-url", default=None, help="openai: the server URL (default: OPENAI_BASE_URL, else OpenAI)")
    p.add_argument("--concurrency", type=positive_int, default=8, help="openai: requests in flight (default %(default)s)")
    p.add_argument("--timeout", type=positive_float, default=LLM.timeout, help="openai: seconds for a whole reply (default %(default)g)")
    p.add_argument("--max-retries", type=positive_int, default=LLM.max_retries, help="openai: retries of a request (default %(default)s)")
    p.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="the longest answer, in tokens (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="local: questions per generation batch (default %(default)s)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="local: where the model runs (default %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="local: weights' dtype (default %(default)s)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N questions, for trials")
    return p


def main(args):
    settings = LLMSettings(model=args.model or LLM.model, base_url=args.base_url, timeout=args.timeout,
                           max_retries=args.max_retries, temperature=0.0)
    return ask(args.benchmark, args.output, args.backend, args.model, args.image_root, args.anno_file, settings,
               args.concurrency, args.max_new_tokens, args.batch_size, args.device, args.dtype, args.model_path, args.limit)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
