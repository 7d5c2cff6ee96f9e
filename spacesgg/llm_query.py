"""Stage 2: prompts from the stage-1 geometry, answers from a backend, LLaVA conversation records.

Files beside OUT.json: OUT.json.cache.jsonl (one line per answered request,
appended as answers arrive, so a killed run resumes without asking again) and
OUT.json.rejects.json (replies that failed validation twice, with the reason).
"""

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from .annotations import check_rewrite_flags, load_annotations, rewrite_path
from batchkit.batch import report
from .backends import BACKENDS, RequestFailed, ServerUnreachable
from batchkit.errors import RecordError, UserError
from batchkit.files import write_json
from .prompts import PROMPT_ALIASES, PROMPT_FUNCTIONS, check_reply, conversation, resolve_prompt_function

DEFAULT_CONCURRENCY = 8


class Cache:
    """Append-only JSONL of answered requests, keyed by a hash of model and prompt."""

    def __init__(self, path):
        """`path` None keeps the cache in memory (the offline template backend needs no resume file)."""
        self.path = Path(path) if path else None
        self.entries = {}
        if self.path and self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.entries[entry["key"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue                      # a line cut short by a kill: asked again
        self.file = None

    def add(self, entry):
        self.entries[entry["key"]] = entry
        if self.path is None:
            return
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
        self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.file.flush()                  # in the kernel now: survives a kill of this process

    def close(self):
        if self.file:
            os.fsync(self.file.fileno())   # and on disk before we report success
            self.file.close()


def request_key(model, request):
    payload = json.dumps([model, request.system_text(), request.user], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Stats:
    def __init__(self):
        self.asked = self.cached = self.answered = self.rejected = self.failed = self.tokens = 0
        self.bad_records = 0
        self.start = time.perf_counter()

    def line(self):
        return (f"llm_based_query: {self.asked} asked, {self.cached} cached, {self.answered} answered, "
                f"{self.rejected} rejected, {self.failed} failed, {self.bad_records} bad records, {self.tokens} tokens "
                f"in {time.perf_counter() - self.start:.1f}s")


def build_requests(records, prompt_function, stats, **options):
    fn = PROMPT_FUNCTIONS[prompt_function]
    requests = []
    for key, record in records.items():
        try:
            requests.extend(fn.build(key, record, **options))
        except (RecordError, KeyError, TypeError, ValueError) as e:
            stats.bad_records += 1
            message = str(e) if isinstance(e, RecordError) else f"{key}: malformed record ({type(e).__name__}: {e})"
            report(f"error: {message}")
    return requests


async def _answer_all(requests, backend, cache, concurrency, stats, on_reject):
    """Ask every request not yet in the cache, at most `concurrency` at a time; validate, retry once, cache."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(request, key):
        async with semaphore:
            reason = None
            for _ in range(2):                                    # a reply that fails validation is asked once more
                reply = await backend.ask(request)
                stats.tokens += reply.tokens
                reason, _turns = check_reply(request, reply.text)
                if reason is None:
                    cache.add({"key": key, "id": request.id, "status": "ok", "reply": reply.text, "tokens": reply.tokens})
                    stats.answered += 1
                    return
            cache.add({"key": key, "id": request.id, "status": "rejected", "reply": reply.text, "reason": reason})
            stats.rejected += 1
            on_reject(request, reason)

    stats.asked = len(requests)
    tasks = [asyncio.create_task(one(r, k)) for r, k in requests]
    try:
        with tqdm(total=len(tasks), desc="requests", unit="req") as bar:
            for future in asyncio.as_completed(tasks):
                try:
                    await future
                except RequestFailed as e:
                    stats.failed += 1
                    report(f"error: {e}")
                bar.update()
    except ServerUnreachable as e:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise UserError(str(e)) from None
    finally:
        await backend.close()


def image_path(key, dataset_base, data_prefix, image_root):
    """The LLaVA "image" field: the (rewritten) image path, relative to --image-root if given."""
    path = rewrite_path(key, dataset_base, data_prefix)
    if image_root:
        try:
            return Path(path).relative_to(image_root).as_posix()
        except ValueError:
            raise RecordError(f"{key}: image {path} is not under --image-root {image_root}") from None
    return str(path) if dataset_base else key


def query(anno_file, prompt_function, output_file, backend="template", limit=None, dry_run=False,
          concurrency=DEFAULT_CONCURRENCY, dataset_base=None, data_prefix=None, image_root=None, box_norm="pad", seed=0,
          pairs_per_view=None, max_qa_pairs=None, **backend_options):
    """Run stage 2; returns the exit code (1 if any record or request failed)."""
    name = resolve_prompt_function(prompt_function)
    if name not in PROMPT_FUNCTIONS:
        raise UserError(f"unknown prompt function {prompt_function!r}; choose one of "
                        f"{', '.join(list(PROMPT_FUNCTIONS) + list(PROMPT_ALIASES))}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if concurrency < 1:
        raise UserError(f"--concurrency must be at least 1, got {concurrency}")
    check_rewrite_flags(dataset_base, data_prefix)
    stats = Stats()
    options = {k: v for k, v in (("pairs_per_view", pairs_per_view), ("max_qa_pairs", max_qa_pairs)) if v is not None}
    records = load_annotations(anno_file)
    requests = build_requests(records, name, stats, box_norm=box_norm, seed=seed, **options)
    if limit is not None:
        requests = requests[:limit]
    output_file = Path(output_file)
    if dry_run:
        write_json(output_file, [{"id": r.id, "image": r.image, "system": r.system_text(), "user": r.user,
                                  "question": r.question} for r in requests])
        print(f"llm_based_query: dry run, {len(requests)} prompts written to {output_file}")
        return 1 if stats.bad_records else 0

    engine = BACKENDS[backend](seed=seed, **backend_options)
    print(f"llm_based_query: {len(requests)} requests for {name}, {engine.describe()}", flush=True)
    cache = Cache(f"{output_file}.cache.jsonl" if engine.name != "template" else None)
    keyed = [(r, request_key(engine.model, r)) for r in requests]
    todo = [(r, k) for r, k in keyed if k not in cache.entries]
    stats.cached = len(keyed) - len(todo)
    rejects = []
    try:
        asyncio.run(_answer_all(todo, engine, cache, concurrency, stats,
                                lambda request, reason: report(f"rejected: {request.id}: {reason}")))
    finally:
        cache.close()

    out = []
    for request, key in keyed:
        entry = cache.entries.get(key)
        if entry is None:
            continue                                          # failed this run; a rerun asks again
        if entry["status"] != "ok":
            rejects.append({"id": request.id, "image": request.image, "reason": entry["reason"], "reply": entry["reply"]})
            continue
        _reason, turns = check_reply(request, entry["reply"])
        try:
            image = image_path(request.image, dataset_base, data_prefix, image_root)
        except RecordError as e:
            stats.failed += 1
            report(f"error: {e}")
            continue
        out.append({"id": request.id, "image": image, "conversations": conversation(turns),
                    "prompt_function": name, "backend": engine.name, "model": engine.model})
    write_json(output_file, out)
    write_json(f"{output_file}.rejects.json", rejects)
    print(stats.line())
    print(f"wrote {len(out)} records to {output_file}" + (f", {len(rejects)} rejects to {output_file}.rejects.json" if rejects else ""))
    return 1 if (stats.failed or stats.bad_records) else 0
