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
          "reverse", "chatml")
REVERSE = {"left": "right", "right": "left", "above": "below", "below": "above", "in front of": "behind",
           "behind": "in front of"}


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
    def __init__(self, latency=0.0, api_key=None, retry_after=1, hang=30.0, port=0, drip=0.1):
        self.latency, self.api_key, self.retry_after, self.hang, self.drip = latency, api_key, retry_after, hang, drip
        self.faults = deque()
        self.log = []                      # one dict per request: prompt hash, outcome
        self.lock = threading.Lock()
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

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                user = next((m["content"] for m in body.get("messages", []) if m["role"] == "user"), "")
                prompt = hashlib.sha256(user.encode()).hexdigest()[:16]
                with server.lock:
                    fault = server.faults.popleft() if server.faults else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
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
                        text = reply_for(user)
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
                        self._send(200, {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
                                         "model": body.get("model", "stub"),
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": text}}],
                                         "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(text.split()),
                                                   "total_tokens": len(user.split()) + len(text.split())}},
                                   drip=server.drip if fault == "drip" else None)
                finally:
                    with server.lock:
                        server.in_flight -= 1
                        server.log.append({"prompt": prompt, "outcome": outcome, "time": time.time()})
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
