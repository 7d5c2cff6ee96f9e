"""Stage 2: prompts from the stage-1 geometry, answers from a backend, LLaVA conversation records.

Files beside OUT.json: OUT.json.cache.jsonl (one line per answered request,
appended as answers arrive, so a killed run resumes without asking again, with
the server's token usage), OUT.json.rejects.json (replies that failed
validation twice, with the reason), OUT.json.usage.json (requests, prompt and
completion tokens, cost) and, for batch inference, OUT.json.batches.json.
A cached answer is validated again on every run: one that fails today's checks
is asked again. A line torn by a kill is skipped, and the next run starts its
entries on a fresh line.
"""

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from batchkit.batch import DEBUG, describe, report, traceback_text
from batchkit.errors import RecordError, Skipped, UserError
from batchkit.files import check_output_file, dumps, write_json
from batchkit.shards import in_shard, input_name, record_shard_settings, shard_path

from .annotations import check_key, check_rewrite_flags, load_annotations, rewrite_path
from .backends import BACKENDS, LLMSettings, request_messages, run_requests
from .batches import BatchState, Ingest, run_batch_files, run_openai_batches
from .prompt_functions import DEFAULT_MAX_REPLY_CHARS, PROMPT_ALIASES, PROMPT_FUNCTIONS, check_reply, conversation, resolve_prompt_function
from .usage import Prices, TokenCounter, add_usage, estimate, summarise, usage_line, write_usage

DEFAULT_CONCURRENCY = 8
DEFAULT_POLL = 30.0          # seconds before the first poll of a pending batch with --wait (then doubling)


@dataclass(frozen=True)
class BatchSettings:
    batch_dir: str | None = None      # where input files go (default OUT.json.batches/)
    outputs: tuple = ()               # batch-file: result files to ingest
    wait: bool = False                # openai-batch: poll until every batch is done
    poll: float = DEFAULT_POLL


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
            torn = self.path.is_file() and self.path.stat().st_size and not self._ends_with_newline()
            self.file = open(self.path, "a", encoding="utf-8")
            if torn:
                self.file.write("\n")              # a kill tore the last line: ours start on a line of their own
        self.file.write(dumps(entry) + "\n")
        self.file.flush()                  # in the kernel now: survives a kill of this process

    def _ends_with_newline(self):
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def close(self):
        if self.file:
            os.fsync(self.file.fileno())   # and on disk before we report success
            self.file.close()


def request_key(model, request):
    payload = json.dumps([model, request.kind, request.system_text(), request.user, request.question], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class Stats:
    def __init__(self):
        self.asked = self.cached = self.answered = self.rejected = self.failed = 0
        self.bad_records = 0
        self.usage = ""                        # the tokens and cost of the output's answers (usage_line)
        self.start = time.perf_counter()

    def line(self):
        return (f"llm_based_query: {self.asked} asked, {self.cached} cached, {self.answered} answered, "
                f"{self.rejected} rejected, {self.failed} failed, {self.bad_records} bad records"
                + (f", {self.usage}" if self.usage else "") + f" in {time.perf_counter() - self.start:.1f}s")


def build_requests(records, prompt_function, stats, **options):
    fn = PROMPT_FUNCTIONS[prompt_function]
    requests = []
    for key, record in records.items():
        try:
            check_key(key)
            if not isinstance(record, dict):
                raise RecordError(f"{key}: record is a {type(record).__name__}, expected an object")
            built = fn.build(key, record, **options)
            for request in built:
                dumps([request.user, request.question, request.facts])     # strict JSON: no NaN, valid text
            requests.extend(built)
        except Skipped as e:
            report(f"skipped: {e}")
        except Exception as e:  # one bad record costs one record
            stats.bad_records += 1
            if DEBUG["on"] and not isinstance(e, UserError):
                report(traceback_text(e).rstrip())
            report(f"error: {describe(key, e)}")
    return requests


async def _answer_all(requests, backend, cache, concurrency, stats, on_reject, max_chars):
    """Ask every request not yet in the cache, at most `concurrency` at a time; validate, retry once, cache."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(request, key):
        async with semaphore:
            reason, usage = None, None
            chars = sum(len(m["content"]) for m in request_messages(request))
            for _ in range(2):                                    # a reply that fails validation is asked once more
                reply = await backend.ask(request)
                usage = add_usage(usage, reply)                   # every attempt is paid for
                reason, _turns = check_reply(request, reply.text, max_chars)
                if reason is None:
                    cache.add({"key": key, "id": request.id, "status": "ok", "reply": reply.text, "usage": usage,
                               "prompt_chars": chars})
                    stats.answered += 1
                    return
            cache.add({"key": key, "id": request.id, "status": "rejected", "reply": reply.text, "reason": reason,
                       "usage": usage, "prompt_chars": chars})
            stats.rejected += 1
            on_reject(request, reason)

    def failed(error):
        stats.failed += 1
        report(f"error: {error}")
    stats.asked = len(requests)
    await run_requests([one(r, k) for r, k in requests], backend, failed)


def image_path(key, dataset_base, data_prefix, image_root):
    """The LLaVA "image" field: the (rewritten) image path; with --image-root, the path LLaVA joins to that root.

    That is the path relative to the root when the image lies under it, else its file name when the root holds a
    file of that name (the flat DATASET/images/ layout); else the record cannot be trained on and is an error.
    """
    path = Path(rewrite_path(key, dataset_base, data_prefix))
    if image_root:
        root = Path(image_root)
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
        if (root / path.name).is_file():
            return path.name
        raise RecordError(f"{key}: image {path} is neither under --image-root {image_root} nor found there by name")
    return str(path) if dataset_base else key


def query(anno_file, prompt_function, output_file, backend="template", settings=LLMSettings(), limit=None,
          dry_run=False, concurrency=DEFAULT_CONCURRENCY, dataset_base=None, data_prefix=None, image_root=None,
          box_norm="pad", seed=0, pairs_per_view=None, max_qa_pairs=None, max_reply_chars=DEFAULT_MAX_REPLY_CHARS,
          shard=None, split=None, prices=Prices(), tokenizer=None, batch=None):
    """Run stage 2; returns the exit code (1 if any record or request failed, or nothing could be written).

    `batch` (BatchSettings) drives the batch backends: where input files go, result files to ingest, --wait.
    """
    name = resolve_prompt_function(prompt_function)
    if name not in PROMPT_FUNCTIONS:
        raise UserError(f"unknown prompt function {prompt_function!r}; choose one of "
                        f"{', '.join(list(PROMPT_FUNCTIONS) + list(PROMPT_ALIASES))}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for flag, value in (("--concurrency", concurrency), ("--limit", 1 if limit is None else limit),
                        ("--pairs-per-view", pairs_per_view or 1), ("--max-qa-pairs", max_qa_pairs or 1),
                        ("--max-reply-chars", max_reply_chars)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    check_rewrite_flags(dataset_base, data_prefix)
    output_file = check_output_file(shard_path(output_file, shard))      # each shard has its own output and cache
    if image_root and not Path(image_root).is_dir():
        raise UserError(f"--image-root {image_root}: folder not found")
    if image_root is None and (Path(anno_file).parent / "images").is_dir():
        image_root = Path(anno_file).parent / "images"            # the annotation file sits in its dataset folder
        print(f"llm_based_query: image paths relative to {image_root} (the dataset's images/; --image-root to change)")
    stats = Stats()
    options = {k: v for k, v in (("pairs_per_view", pairs_per_view), ("max_qa_pairs", max_qa_pairs)) if v is not None}
    record_shard_settings(output_file, shard, {
        "stage": "llm_based_query", "input": input_name(anno_file), "prompt_function": name, "backend": backend,
        "model": "template" if backend == "template" else settings.model, "temperature": settings.temperature,
        "seed": seed, "box_norm": box_norm, "limit": limit, "dry_run": dry_run, "image_root": image_root,
        "dataset_base": dataset_base, "data_prefix": data_prefix, "max_reply_chars": max_reply_chars,
        "max_tokens": settings.max_tokens, "split": sorted(split) if split is not None else None, **options})
    records = {k: r for k, r in load_annotations(anno_file, allow_empty=shard is not None).items()
               if in_shard(k, shard) and (split is None or k in split)}
    if split is not None:
        print(f"llm_based_query: {len(records)} images of the split", flush=True)
    requests = build_requests(records, name, stats, box_norm=box_norm, seed=seed, **options)
    if limit is not None:
        requests = requests[:limit]
    engine = BACKENDS[backend](settings, seed=seed) if not dry_run else None
    model = "template" if backend == "template" else settings.model
    cache = Cache(f"{output_file}.cache.jsonl" if backend != "template" else None)
    keyed = [(r, request_key(model, r)) for r in requests]
    todo = []
    for request, key in keyed:
        entry = cache.entries.get(key)
        if entry is not None and entry.get("status") == "ok" and check_reply(request, entry.get("reply", ""), max_reply_chars)[0]:
            entry = None                                  # cached, but it fails today's validation: ask again
        if entry is None:
            todo.append((request, key))
    stats.cached = len(keyed) - len(todo)
    if dry_run:
        cache.close()
        write_json(output_file, [{"id": r.id, "image": r.image, "system": r.system_text(), "user": r.user,
                                  "question": r.question} for r in requests])
        print(f"llm_based_query: dry run, {len(requests)} prompts written to {output_file}")
        if backend != "template":
            found = estimate([request_messages(r) for r, _ in todo], list(cache.entries.values()),
                             TokenCounter(tokenizer, cache.entries.values()), settings.max_tokens or 0, prices)
            write_json(f"{output_file}.estimate.json", {"prompt_function": name, "model": model, **found})
            print(f"llm_based_query: dry run of {name}: {found['requests']} requests still to ask ({stats.cached} "
                  f"cached), {found['prompt_tokens']} prompt tokens ({found['prompt_tokens_from']}), "
                  f"{found['completion_tokens']} completion tokens expected ({found['completion_tokens_from']})"
                  + (f", ${found['cost_usd']:.4f} at ${prices.price_in:g} / ${prices.price_out:g} per million tokens"
                     if found["cost_usd"] is not None else ", no cost without --price-in and --price-out"), flush=True)
        return 1 if stats.bad_records or not requests else 0

    print(f"llm_based_query: {len(requests)} requests for {name}, {engine.describe()}", flush=True)
    on_reject = lambda request, reason: report(f"rejected: {request.id}: {reason}")  # noqa: E731
    try:
        if engine.batch:
            batch = batch or BatchSettings()
            state = BatchState(f"{output_file}.batches.json")
            ingest = Ingest({k: r for r, k in keyed}, cache, state, max_reply_chars, settings.max_retries, stats, on_reject)
            folder = Path(batch.batch_dir) if batch.batch_dir else Path(f"{output_file}.batches")
            if backend == "batch-file":
                finished = run_batch_files(keyed, settings, cache, state, ingest, folder, batch.outputs,
                                           settings.max_retries, stats)
            else:
                finished = run_openai_batches(keyed, settings, cache, state, ingest, folder, settings.max_retries, stats,
                                              batch.wait, batch.poll)
            if not finished:
                print(stats.line())
                return 1 if stats.failed or stats.bad_records else 0
        else:
            asyncio.run(_answer_all(todo, engine, cache, concurrency, stats, on_reject, max_reply_chars))
    finally:
        cache.close()
    if backend != "template":
        summary = summarise([cache.entries[k] for _, k in keyed if k in cache.entries], stats.asked, prices)
        stats.usage = usage_line(summary)
        write_usage(f"{output_file}.usage.json", name, model, backend, summary, prices)

    out, rejects = [], []
    for request, key in keyed:
        entry = cache.entries.get(key)
        if entry is None:
            continue                                          # failed this run; a rerun asks again
        reason, turns = (entry.get("reason", "rejected"), None) if entry.get("status") != "ok" else \
            check_reply(request, entry.get("reply", ""), max_reply_chars)
        if reason:
            rejects.append({"id": request.id, "image": request.image, "reason": reason, "reply": entry.get("reply")})
            continue
        try:
            image = image_path(request.image, dataset_base, data_prefix, image_root)
        except RecordError as e:
            stats.failed += 1
            report(f"error: {e}")
            continue
        out.append({"id": request.id, "image": image, "conversations": conversation(turns),
                    "prompt_function": name, "backend": "openai" if engine.batch else engine.name, "model": engine.model,
                    **request.extra})
    write_json(output_file, out)
    write_json(f"{output_file}.rejects.json", rejects)
    print(stats.line())
    print(f"wrote {len(out)} records to {output_file}" + (f", {len(rejects)} rejects to {output_file}.rejects.json" if rejects else ""))
    nothing = not out and (requests or shard is None)          # an empty shard has nothing to do; that is no failure
    if nothing:
        report(f"error: no record could be written to {output_file} ({len(requests)} requests"
               f"{', every one rejected or failed' if requests else ''}); see the lines above")
    return 1 if (stats.failed or stats.bad_records or nothing) else 0
