"""Stage 2 through batch inference: the OpenAI Batch API (half the price, a 24-hour window), or request files for any
server that runs the Batch format (`vllm run-batch -i in.jsonl -o out.jsonl`).

Input files hold one request a line, `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`
(`custom_id` is the request's cache key; the body the live backend's: model, messages, temperature, max_tokens),
at most 50,000 lines and 190 MB a file. Output files hold `{"id", "custom_id", "response": {"status_code",
"body"}, "error"}` a line, in any order. Every answered line goes through exactly the live backend's validation
into the same cache (OUT.json.cache.jsonl); a line that failed, or a reply that was rejected, is submitted again in
the next round, up to --max-retries rounds.

OUT.json.batches.json records every submitted batch: its input file, the uploaded file's id (recorded before the
batch is created: a run killed in between finds its batch again by input_file_id), the batch's id and whether its
output was ingested, and per request the rounds it was submitted in. A request of a pending batch is never
submitted twice, and no answer that was paid for is lost: a rerun polls, ingests, resubmits what is missing, and
writes the records once nothing is left.
"""

import json
import os
import time
from pathlib import Path

from batchkit.batch import report
from batchkit.errors import UserError
from batchkit.files import dumps, write_bytes, write_json

from .backends import MalformedReply, reply_of, request_messages
from .prompt_functions import check_reply
from .usage import add_usage

MAX_LINES = 50_000
MAX_BYTES = 190 * 1024 * 1024
FINAL = ("completed", "expired", "failed", "cancelled")
ENDPOINT = "/v1/chat/completions"
POLL_CAP = 300.0                 # seconds between polls at most, with --wait


def batch_line(key, request, settings):
    """One request of an input file: exactly what the live backend sends."""
    body = {"model": settings.model, "messages": request_messages(request), "temperature": settings.temperature}
    if settings.max_tokens:
        body["max_tokens"] = settings.max_tokens
    return {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}


def split_lines(lines, max_lines=MAX_LINES, max_bytes=MAX_BYTES):
    """The lines (text, each ending in a newline) grouped into files of at most max_lines lines and max_bytes bytes."""
    files, current, size = [], [], 0
    for line in lines:
        n = len(line.encode("utf-8"))
        if n > max_bytes:
            raise UserError(f"one request is {n} bytes, more than a batch file may hold ({max_bytes})")
        if current and (len(current) >= max_lines or size + n > max_bytes):
            files.append(current)
            current, size = [], 0
        current.append(line)
        size += n
    return files + ([current] if current else [])


class BatchState:
    """OUT.json.batches.json: the submitted batches and each request's submission rounds, written after every change."""

    def __init__(self, path):
        self.path = Path(path)
        data = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                raise UserError(f"{self.path}: not readable JSON; it records submitted batches: restore it or, with no "
                                "batch pending, delete it") from None
        self.batches = data.get("batches", [])
        self.rounds = data.get("rounds", {})

    def save(self):
        write_json(self.path, {"batches": self.batches, "rounds": self.rounds})

    def pending_keys(self):
        return {k for b in self.batches if not b.get("ingested") for k in b["keys"]}


class Ingest:
    """Puts Batch output lines through the live validation into the cache; counts what happened."""

    def __init__(self, requests, cache, state, max_chars, max_rounds, stats, on_reject, key=None):
        self.requests, self.cache, self.state = requests, cache, state
        self.max_chars, self.max_rounds, self.stats, self.on_reject, self.api_key = max_chars, max_rounds, stats, on_reject, key

    def lines(self, text, source):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.stats.failed += 1
                report(f"error: {source} line {n}: not a JSON object of the Batch output format; skipped")
                continue
            self.line(row, f"{source} line {n}")

    def line(self, row, where):
        key = row.get("custom_id")
        request = self.requests.get(key)
        if request is None:
            report(f"error: {where}: custom_id {str(key)[:80]!r} is not a request of this run; skipped")
            self.stats.failed += 1
            return
        entry = self.cache.entries.get(key)
        if entry is not None and entry.get("status") == "ok":
            return                                          # answered before (an output ingested twice)
        response = row.get("response") if isinstance(row.get("response"), dict) else {}
        if response.get("status_code") != 200:
            why = row.get("error") or (response.get("body") or {}).get("error") or f"status {response.get('status_code')}"
            report(f"warning: {where}: {request.id}: not answered ({str(why)[:120]}); submitted again")
            return
        try:
            reply = reply_of(response.get("body"), self.api_key)
        except MalformedReply as e:
            report(f"warning: {where}: {request.id}: {e}; submitted again")
            return
        usage = add_usage((entry or {}).get("usage"), reply)
        chars = sum(len(m["content"]) for m in request_messages(request))
        reason, _ = check_reply(request, reply.text, self.max_chars)
        if reason is None:
            self.cache.add({"key": key, "id": request.id, "status": "ok", "reply": reply.text, "usage": usage,
                            "prompt_chars": chars})
            self.stats.answered += 1
        elif self.state.rounds.get(key, 0) > self.max_rounds:
            self.cache.add({"key": key, "id": request.id, "status": "rejected", "reply": reply.text, "reason": reason,
                            "usage": usage, "prompt_chars": chars})
            self.stats.rejected += 1
            self.on_reject(request, reason)
        else:
            self.cache.entries[key] = {"key": key, "id": request.id, "status": "retry", "usage": usage}  # paid, asked again


def _settled(cache, key):
    return cache.entries.get(key, {}).get("status") in ("ok", "rejected")


def _todo(keyed, cache, state, max_rounds):
    pending = state.pending_keys()
    return [(r, k) for r, k in keyed if not _settled(cache, k) and k not in pending and state.rounds.get(k, 0) <= max_rounds]


def _give_up(keyed, cache, state, max_rounds, stats):
    """Requests that used every round without an answer fail (a later rerun may try them afresh)."""
    for request, key in keyed:
        if not _settled(cache, key) and state.rounds.get(key, 0) > max_rounds and key not in state.pending_keys():
            stats.failed += 1
            report(f"error: {request.id}: no answer after {state.rounds[key]} batch rounds")
            state.rounds.pop(key, None)


def _input_files(todo, settings, folder, round_no, state):
    lines = [dumps(batch_line(key, request, settings)) + "\n" for request, key in todo]
    paths = []
    for k, chunk in enumerate(split_lines(lines)):
        path = Path(folder) / f"batch_input-r{round_no:03d}-{k:03d}.jsonl"
        write_bytes(path, "".join(chunk).encode("utf-8"))
        paths.append((path, [json.loads(line)["custom_id"] for line in chunk]))
    for _, key in todo:
        state.rounds[key] = state.rounds.get(key, 0) + 1
    return paths


def run_batch_files(keyed, settings, cache, state, ingest, batch_dir, outputs, max_rounds, stats):
    """--backend batch-file: ingest result files, then write input files for what is left; True when nothing is."""
    for path in outputs:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise UserError(f"--batch-output {path}: cannot read ({e.strerror})") from None
        ingest.lines(text, path)
    _give_up(keyed, cache, state, max_rounds, stats)
    todo = _todo(keyed, cache, state, max_rounds)
    if not todo:
        state.save()
        return True
    round_no = 1 + max(state.rounds.values(), default=0)
    files = _input_files(todo, settings, batch_dir, round_no, state)
    state.save()
    stats.asked = len(todo)
    print(f"llm_based_query: {len(todo)} requests written to {len(files)} batch input files in {batch_dir}; run them "
          f"(e.g. vllm run-batch -i FILE -o RESULT.jsonl --model {settings.model}), then rerun this command with "
          "--batch-output RESULT.jsonl ...", flush=True)
    return False


class OpenAIBatches:
    """The OpenAI Batch API of a server (OpenAI, or any that implements /v1/files and /v1/batches)."""

    def __init__(self, settings):
        import openai
        self.openai = openai
        self.key = os.environ.get("OPENAI_API_KEY")
        if not self.key:
            raise UserError("OPENAI_API_KEY is not set; export your key to use --backend openai-batch")
        base = settings.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.client = openai.OpenAI(api_key=self.key, base_url=base, timeout=settings.timeout, max_retries=settings.max_retries)

    def content(self, file_id):
        return self.client.files.content(file_id).read().decode("utf-8", errors="replace")

    def find_batch(self, file_id):
        """The batch created from an uploaded file (a run killed after creating it, before recording it), or None."""
        for batch in self.client.batches.list(limit=100):          # the page iterates over every page
            if batch.input_file_id == file_id:
                return batch.id
        return None


def run_openai_batches(keyed, settings, cache, state, ingest, batch_dir, max_rounds, stats, wait=False, poll=30.0):
    """--backend openai-batch: poll, ingest, resubmit, submit; True when nothing is left to wait for."""
    api = OpenAIBatches(settings)
    ingest.api_key = api.key
    delay = poll
    while True:
        for b in state.batches:                              # uploaded, but the batch was not recorded: find or create it
            if b.get("batch_id") is None and not b.get("ingested"):
                b["batch_id"] = api.find_batch(b["file_id"]) or api.client.batches.create(
                    input_file_id=b["file_id"], endpoint=ENDPOINT, completion_window="24h").id
                state.save()
        pending = 0
        for b in state.batches:
            if b.get("ingested"):
                continue
            try:
                batch = api.client.batches.retrieve(b["batch_id"])
            except api.openai.NotFoundError:
                report(f"error: batch {b['batch_id']} no longer exists on the server; its requests are submitted again")
                stats.failed += 1
                b.update(ingested=True, status="missing")
                state.save()
                continue
            b["status"] = batch.status
            if batch.status not in FINAL:
                pending += 1
                continue
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    ingest.lines(api.content(file_id), f"batch {b['batch_id']} file {file_id}")
            b["ingested"] = True
            state.save()
        _give_up(keyed, cache, state, max_rounds, stats)
        todo = _todo(keyed, cache, state, max_rounds)
        if todo:
            round_no = 1 + max(state.rounds.values(), default=0)
            for path, keys in _input_files(todo, settings, batch_dir, round_no, state):
                with open(path, "rb") as f:
                    file_id = api.client.files.create(file=f, purpose="batch").id
                state.batches.append({"input": str(path), "file_id": file_id, "batch_id": None, "keys": keys,
                                      "status": "uploaded", "ingested": False})
                state.save()                                 # the file id first: a kill here finds the batch again
                state.batches[-1]["batch_id"] = api.client.batches.create(
                    input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h").id
                state.batches[-1]["status"] = "validating"
                state.save()
                pending += 1
            stats.asked += len(todo)
        if not pending:
            return True
        if not wait:
            print(f"llm_based_query: {pending} batches pending (submitted or in progress); rerun the same command to "
                  "collect them", flush=True)
            return False
        time.sleep(delay)
        delay = min(delay * 2, POLL_CAP)
