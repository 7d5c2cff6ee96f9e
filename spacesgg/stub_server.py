"""A loopback OpenAI-compatible chat server for tests, benchmarks and offline trials of the openai backend.

    python -m spacesgg.stub_server --port 8011 --latency 0.2

It answers /v1/chat/completions from the prompt itself (echoing the tags and
the measured relations it was given), after `latency` seconds, and can be
told to inject faults, a queue consumed one per request:
  ok         no fault: a valid answer (to place faults after some answers)
  429        rate limited, Retry-After: `retry_after` seconds
  429long    rate limited, Retry-After: 3600
  429date    rate limited, Retry-After: an HTTP date one hour ahead
  500        server error
  timeout    no answer for `hang` seconds
  drip       a valid answer, one byte every `drip` seconds (ends when the client hangs up)
  malformed  a 200 whose body is cut short
  badbox     a reply citing a box the prompt did not give
  badtag     a reply with a broken tag
  huge       a reply of 30000 characters
  leak       a reply that quotes the API key of the request
  reverse    a reply that states every direction reversed
  chatml     a reply that holds a role marker (USER:)
  wrong      (a VLM stand-in, below) the wrong answer
As a VLM stand-in (`answers`: {question: (right reply, wrong reply)}), it answers a user turn of an image and a
question with the right reply, or the wrong one where the fault says so.
It also runs the Batch API: /v1/files (upload, content) and /v1/batches (create, retrieve, list, cancel). A batch
moves one state per retrieve (validating, in_progress, finalizing) and then ends as the next plan of
`batch_plans` says (default: completed, every line answered as a live request would be):
  {"status": "completed"|"expired"|"failed", "answer": N (only the first N lines), "error_lines": [k, ...] (to the
   error file), "server_error_lines": [k, ...] (a 500 body), "reversed": True (output lines in reverse order)}
It binds 127.0.0.1 only.
"""

import argparse
import email.utils
import hashlib
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TAG_RE = re.compile(r"<ref>[^<>]+</ref><box>\[\[[\d, ]+\]\]</box>")
FAULTS = ("ok", "429", "429long", "429date", "500", "timeout", "drip", "malformed", "badbox", "badtag", "huge", "leak",
          "reverse", "chatml", "wrong")
REVERSE = {"left": "right", "right": "left", "above": "below", "below": "above", "in front of": "behind",
           "behind": "in front of"}


def prompt_words(messages):
    """The stub's prompt tokens: the words of every message's text (a real server counts its tokenizer's tokens)."""
    words = 0
    for m in messages:
        content = m.get("content", "")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        words += sum(len(str(p.get("text", "")).split()) for p in parts if p.get("type") == "text")
    return words


def reply_for(user):
    """A valid reply built from the user context of the three prompt kinds."""
    if "Measured relation from this viewpoint:" in user:
        return user.split("Measured relation from this viewpoint:", 1)[1].strip()
    if "Measured from the depth" in user:
        line = next(line for line in user.splitlines() if line.startswith("- "))[2:]
        tags = TAG_RE.findall(line)
        return f"Q: What was measured about {tags[0]}?\nA: {line.rstrip('.')}."
    if "Objects and relations" in user:
        line = next(line for line in user.splitlines() if line.startswith("- "))[2:]
        tags = TAG_RE.findall(line)
        return f"Q: Where is {tags[0]} relative to {tags[1]}?\nA: {line.rstrip('.')}."
    tags = TAG_RE.findall(user)
    return "From near to far the scene shows " + ", ".join(tags) + "." if tags else "OK."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256           # the default 5 drops bursts of concurrent connects (1 s SYN retries)


class StubServer:
    def __init__(self, latency=0.0, api_key=None, retry_after=1, hang=30.0, port=0, drip=0.1, answers=None):
        self.latency, self.api_key, self.retry_after, self.hang, self.drip = latency, api_key, retry_after, hang, drip
        self.answers = answers or {}
        self.files, self.batches, self.batch_plans = {}, {}, deque()
        self.batch_lines = 0                   # requests answered through batches
        self.batch_usage = []                  # [prompt, completion] tokens reported per batch answer
        self.faults = deque()
        self.log = []                      # one dict per request: prompt hash, outcome
        self.lock = threading.RLock()
        self.in_flight = self.max_in_flight = 0
        self.httpd = _Server(("127.0.0.1", port), self._handler())
        self.thread = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def inject(self, *faults):
        for f in faults:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}; one of {FAULTS}")
            self.faults.append(f)

    def _file(self, content, filename, purpose):
        with self.lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                   "filename": filename, "purpose": purpose, "status": "processed", "content": content}
        return {k: v for k, v in self.files[file_id].items() if k != "content"}

    def _advance(self, batch):
        """One step of a batch's life per retrieve; at the end, its output and error files per its plan."""
        order = ["validating", "in_progress", "finalizing"]
        if batch["status"] in order[:-1]:
            batch["status"] = order[order.index(batch["status"]) + 1]
            return
        if batch["status"] != "finalizing":
            return
        plan = batch["plan"]
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].decode().splitlines() if line.strip()]
        if plan.get("status") == "failed":
            batch.update(status="failed", errors={"data": [{"code": "invalid", "message": "stub: this batch failed"}]})
            return
        answered = lines[:plan.get("answer", len(lines))]
        out, errors = [], []
        for k, line in enumerate(answered):
            if k in plan.get("error_lines", ()):
                errors.append({"id": f"req-{k}", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": "server_error", "message": "stub: lost"}})
                continue
            if k in plan.get("server_error_lines", ()):
                out.append({"id": f"req-{k}", "custom_id": line["custom_id"],
                            "response": {"status_code": 500, "body": {"error": {"message": "stub: internal error"}}},
                            "error": None})
                continue
            user = next((m["content"] for m in line["body"]["messages"] if m["role"] == "user"), "")
            text = reply_for(user)
            self.batch_lines += 1
            prompt_tokens = prompt_words(line["body"]["messages"])
            self.batch_usage.append([prompt_tokens, len(text.split())])
            out.append({"id": f"req-{k}", "custom_id": line["custom_id"], "error": None, "response": {
                "status_code": 200, "request_id": f"r{k}", "body": {
                    "id": f"chatcmpl-{k}", "object": "chat.completion", "created": int(time.time()),
                    "model": line["body"]["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                              "total_tokens": prompt_tokens + len(text.split())}}}})
        if plan.get("reversed"):
            out.reverse()
        if out:
            batch["output_file_id"] = self._file("".join(json.dumps(o) + "\n" for o in out).encode(), "out.jsonl",
                                                 "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._file("".join(json.dumps(o) + "\n" for o in errors).encode(), "err.jsonl",
                                                "batch_output")["id"]
        batch["status"] = plan.get("status", "completed")
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}

    def answered(self):
        """Prompt hashes that got a valid 200 answer, one per answer."""
        return [e["prompt"] for e in self.log if e["outcome"] == "ok"]

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _handler(server):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"       # keep-alive, as real servers
            disable_nagle_algorithm = True      # headers and body go out at once (no 40 ms delayed-ACK stall)

            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=(), drip=None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                try:
                    if drip is None:
                        self.wfile.write(data)
                        return
                    for k in range(len(data)):          # bounded: one byte per `drip` seconds, then done
                        self.wfile.write(data[k:k + 1])
                        self.wfile.flush()
                        time.sleep(drip)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _batch_view(self, batch):
                return {k: v for k, v in batch.items() if k != "plan"}

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                parts = path.split("/")
                if path.endswith("/content") and len(parts) >= 3 and parts[-2] in server.files:
                    data = server.files[parts[-2]]["content"]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                if parts[-1] in server.files:
                    return self._send(200, {k: v for k, v in server.files[parts[-1]].items() if k != "content"})
                if parts[-1] == "batches":
                    with server.lock:
                        data = [self._batch_view(b) for b in server.batches.values()]
                    return self._send(200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
                if parts[-1] in server.batches:
                    with server.lock:
                        server._advance(server.batches[parts[-1]])
                        return self._send(200, self._batch_view(server.batches[parts[-1]]))
                return self._send(404, {"error": {"message": f"no route or object {self.path}"}})

            def _batch_post(self, raw):
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/files"):
                    import email.parser
                    message = email.parser.BytesParser().parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
                    fields = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
                    return self._send(200, server._file(fields["file"].get_payload(decode=True),
                                                        fields["file"].get_filename(), fields["purpose"].get_payload()))
                if path.endswith("/batches"):
                    body = json.loads(raw or b"{}")
                    if body.get("input_file_id") not in server.files:
                        return self._send(400, {"error": {"message": "no such input file"}})
                    with server.lock:
                        batch_id = f"batch_{len(server.batches) + 1}"
                        server.batches[batch_id] = {
                            "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
                            "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                            "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                            "error_file_id": None, "plan": server.batch_plans.popleft() if server.batch_plans else {}}
                        return self._send(200, self._batch_view(server.batches[batch_id]))
                if path.endswith("/cancel") and path.split("/")[-2] in server.batches:
                    with server.lock:
                        batch = server.batches[path.split("/")[-2]]
                        batch["status"] = "cancelled"
                        return self._send(200, self._batch_view(batch))
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
                    return self._batch_post(raw)
                body = json.loads(raw or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                user = next((m["content"] for m in body.get("messages", []) if m["role"] == "user"), "")
                images = 0
                if isinstance(user, list):                      # a VLM turn: image parts and a text part
                    images = sum(part.get("type") == "image_url" and str(part.get("image_url", {}).get("url", "")).startswith(
                        "data:image/") for part in user)
                    user = " ".join(part.get("text", "") for part in user if part.get("type") == "text")
                prompt = hashlib.sha256(user.encode()).hexdigest()[:16]
                with server.lock:
                    fault = server.faults.popleft() if server.faults else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                usage = None
                try:
                    time.sleep(server.latency)
                    outcome = fault or "ok"
                    if fault in ("429", "429long", "429date"):
                        wait = {"429": str(server.retry_after), "429long": "3600",
                                "429date": email.utils.formatdate(time.time() + 3600, usegmt=True)}[fault]
                        self._send(429, {"error": {"message": "rate limited"}}, [("Retry-After", wait)])
                    elif fault == "500":
                        self._send(500, {"error": {"message": "internal error"}})
                    elif fault == "timeout":
                        time.sleep(server.hang)
                        self._send(500, {"error": {"message": "too late"}})
                    elif fault == "malformed":
                        self._send(200, b'{"id": "x", "choices": [ {"mess')
                    else:
                        text = server.answers[user][fault == "wrong"] if user in server.answers else reply_for(user)
                        if fault == "badbox":
                            text += " Also <ref>ghost</ref><box>[[1, 2, 3, 4]]</box>."
                        elif fault == "badtag":
                            text = text.replace("</ref>", "", 1)
                        elif fault == "huge":
                            text += " " + "very " * 6000
                        elif fault == "leak":
                            text += " (" + self.headers.get("Authorization", "").removeprefix("Bearer ") + ")"
                        elif fault == "reverse":
                            text = re.sub("|".join(REVERSE), lambda m: REVERSE[m.group(0)], text)
                        elif fault == "chatml":
                            text += "\nUSER: and now?"
                        usage = [prompt_words(body.get("messages", [])), len(text.split())]
                        self._send(200, {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                                         "model": body.get("model", "stub"),
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": text}}],
                                         "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                                   "total_tokens": sum(usage)}},
                                   drip=server.drip if fault == "drip" else None)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                        server.log.append({"prompt": prompt, "outcome": outcome, "time": time.time(), "images": images,
                                           "usage": usage})
        return Handler


def main():
    p = argparse.ArgumentParser(description="Loopback OpenAI-compatible stub server (127.0.0.1 only).", allow_abbrev=False)
    p.add_argument("--port", type=int, default=8011, help="port on 127.0.0.1 (default %(default)s)")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request (default %(default)g)")
    args = p.parse_args()
    server = StubServer(latency=args.latency, port=args.port)
    print(f"stub OpenAI server at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
