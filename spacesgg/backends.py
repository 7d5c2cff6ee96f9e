"""Stage 2 answer backends: `template` (offline, from the geometry) and `openai` (any OpenAI-compatible server).

The OpenAI backend gives every request a total deadline (`timeout`: the whole
reply, however slowly it drips), retries 429, 5xx, timeouts, connection
errors and malformed replies with exponential backoff and full jitter from the
OS's randomness (two runs never retry in lockstep), honours Retry-After
(seconds or an HTTP date) up to `max_wait`, and fails other 4xx at once. The
API key comes from OPENAI_API_KEY only; it is never printed, logged or
written, and anything that looks like it in a reply is redacted.
"""

import asyncio
import email.utils
import math
import os
import random
import re
import time
from dataclasses import dataclass
from datetime import timezone

from batchkit.errors import UserError

from .prompt_functions import PROMPT_FUNCTIONS, seeded_rng


@dataclass(frozen=True)
class LLMSettings:
    """Everything the openai backend needs to know, defined once."""
    model: str = "gpt-4o-mini"
    base_url: str | None = None       # default: OPENAI_BASE_URL, else OpenAI
    timeout: float = 60.0             # seconds for the whole reply
    max_retries: int = 5
    backoff: float = 1.0              # the first retry's upper bound; doubles per attempt
    max_wait: float = 60.0            # cap on any wait, Retry-After included
    temperature: float = 0.7
    max_tokens: int | None = 1024     # completion tokens at most per request (sent to the server; a dry run's upper bound)


MAX_BACKOFF = 60.0
REDACTED = "[REDACTED]"
KEY_LIKE_RE = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


@dataclass
class Reply:
    text: str
    prompt_tokens: int | None = None        # None: the server sent no usage (unknown, not zero)
    completion_tokens: int | None = None

    @property
    def tokens(self):
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


class RequestFailed(Exception):
    """The request could not be answered (after retries); the batch goes on."""


class MalformedReply(Exception):
    """A 200 answer without a usable message; retried like a server error."""


class ServerUnreachable(Exception):
    """No connection to the server after retries; the run stops (a rerun resumes)."""


def request_messages(request):
    """The chat messages of a stage-2 request: the prompt function's system prompt, the same for all its requests, first
    and byte-identical (servers with prefix caching reuse it), then the image's own context."""
    return [{"role": "system", "content": request.system_text()}, {"role": "user", "content": request.user}]


class TemplateBackend:
    """Writes the answers from the geometry itself, with seeded, varied phrasing."""

    name = "template"
    batch = False

    def __init__(self, settings=None, seed=0):
        self.seed = seed
        self.model = "template"

    def describe(self):
        return f"template backend (offline, seed {self.seed})"

    async def ask(self, request):
        return Reply(PROMPT_FUNCTIONS[request.kind].template(request, seeded_rng(self.seed, request.id + ":answer")))

    async def close(self):
        pass


def redact(text, key):
    """`text` with the API key, and anything shaped like an OpenAI key, replaced by [REDACTED]."""
    if key and len(key) >= 4:
        text = text.replace(key, REDACTED)
    return KEY_LIKE_RE.sub(REDACTED, text)


def retry_after_seconds(headers, now=None):
    """Seconds the server asks us to wait (Retry-After-Ms, or Retry-After as seconds or an HTTP date in UTC), or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            seconds = float(value) / 1000.0
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)       # HTTP dates are GMT
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _stop_if_cancelled():
    """Honour a cancellation (Ctrl-C) that asyncio.wait_for swallowed: on Python 3.11 a cancel that lands as the
    request ends is lost, and the retry loop would go on asking a server that hangs."""
    task = asyncio.current_task()
    if task is not None and getattr(task, "cancelling", lambda: 0)():
        raise asyncio.CancelledError


class OpenAIBackend:
    """Chat completions from any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp) via the openai package."""

    name = "openai"
    batch = False

    def __init__(self, settings, seed=0):
        import openai
        self.openai = openai
        self.key = os.environ.get("OPENAI_API_KEY")
        if not self.key:
            raise UserError("OPENAI_API_KEY is not set; export your key (for a local vLLM/Ollama/llama.cpp server "
                            "any value, e.g. OPENAI_API_KEY=EMPTY), or use --backend template")
        self.settings = settings
        self.model = settings.model
        self.base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.rng = random.SystemRandom()              # jitter from the OS, never from --seed
        self.client = openai.AsyncOpenAI(api_key=self.key, base_url=self.base_url, timeout=settings.timeout, max_retries=0)

    def describe(self):
        return f"openai backend, model {self.model} at {self.base_url}"

    def delay(self, attempt, error):
        """Full-jitter backoff, or the server's Retry-After if longer; never more than max_wait."""
        s = self.settings
        wait = self.rng.uniform(0, min(MAX_BACKOFF, s.backoff * 2 ** attempt))
        response = getattr(error, "response", None)
        asked = retry_after_seconds(response.headers) if response is not None else None
        if asked is not None:
            wait = max(wait, asked)
        return min(wait, s.max_wait)

    async def _create(self, messages, max_tokens=None):
        s = self.settings
        extra = {"max_tokens": max_tokens} if max_tokens else {}
        response = await asyncio.wait_for(            # the whole reply, not each read: a dripping reply ends here
            self.client.chat.completions.create(model=s.model, messages=messages, temperature=s.temperature, **extra),
            timeout=s.timeout)
        return reply_of(response, self.key)

    async def ask(self, request):
        return await self.chat(request_messages(request), request.id, self.settings.max_tokens)

    async def chat(self, messages, name, max_tokens=None):
        """One chat completion with retries (see the module docstring); `name` names the request in errors."""
        o, s = self.openai, self.settings
        last = None
        for attempt in range(s.max_retries + 1):
            try:
                reply = await self._create(messages, max_tokens)
                _stop_if_cancelled()
                return reply
            except (o.RateLimitError, o.InternalServerError, o.APITimeoutError, o.APIConnectionError,
                    o.APIResponseValidationError, MalformedReply, asyncio.TimeoutError, ValueError) as e:
                last = e                                  # ValueError: a body that is not JSON
            except o.APIStatusError as e:
                raise RequestFailed(f"{name}: server answered {e.status_code} ({_short(e, self.key)}); "
                                    f"{_hint(e.status_code)}") from None
            _stop_if_cancelled()
            if attempt < s.max_retries:
                await asyncio.sleep(self.delay(attempt, last))
        if isinstance(last, o.APIConnectionError) and not isinstance(last, o.APITimeoutError):
            raise ServerUnreachable(f"cannot reach {self.base_url} ({_short(last, self.key)}) after {s.max_retries + 1} "
                                    "attempts; is the server running and --base-url right? Rerun to resume")
        raise RequestFailed(f"{name}: {_describe(last, o, self.key)} after {s.max_retries + 1} attempts")

    async def close(self):
        await self.client.close()


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def reply_of(response, key=None):
    """The Reply of a chat completion (an object of the openai package, or the same as a dict): its text, redacted of
    anything like the key, and its usage, prompt and completion tokens apart (None where the server sent none)."""
    def get(obj, name):
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    try:
        text = get(get(get(response, "choices")[0], "message"), "content")
    except (AttributeError, IndexError, TypeError, KeyError):
        text = None
    if not isinstance(text, str):
        raise MalformedReply("reply without choices[0].message.content")
    usage = get(response, "usage")
    prompt = _count(get(usage, "prompt_tokens")) if usage is not None else None
    completion = _count(get(usage, "completion_tokens")) if usage is not None else None
    return Reply(redact(text, key), prompt, completion)


async def run_requests(coroutines, backend, on_failed, desc="requests", unit="req"):
    """Run the request coroutines (each bounded by its caller's semaphore) with a progress bar; a RequestFailed is
    `on_failed(error)` and the rest go on; an unreachable server stops the run with one line. Whatever happens
    (Ctrl-C included), what is in flight is cancelled and the backend closed before returning."""
    from tqdm import tqdm
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
            for future in asyncio.as_completed(tasks):
                try:
                    await future
                except RequestFailed as e:
                    on_failed(e)
                bar.update()
    except ServerUnreachable as e:
        raise UserError(str(e)) from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.close()


def _short(error, key=None):
    text = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return redact(text, key)


def _describe(error, o, key=None):
    if isinstance(error, o.RateLimitError):
        return "rate limited (429)"
    if isinstance(error, (o.APITimeoutError, asyncio.TimeoutError)):
        return "timed out (raise --timeout?)"
    if isinstance(error, o.InternalServerError):
        return f"server error {error.status_code}"
    if isinstance(error, (o.APIResponseValidationError, MalformedReply, ValueError)):
        return "malformed reply"
    return _short(error, key)


def _hint(status):
    return {401: "check OPENAI_API_KEY", 403: "check the key's permissions", 404: "check --model and --base-url",
            400: "the server refused the request; check --model"}.get(status, "see the server's log")


class BatchBackend:
    """The same requests as the openai backend, answered by batch inference (spacesgg.batches): its records are the
    openai backend's, since the replies are the same."""

    batch = True

    def __init__(self, settings, seed=0):
        self.settings, self.model = settings, settings.model

    def describe(self):
        return f"{self.name} backend, model {self.model}"


class OpenAIBatchBackend(BatchBackend):
    name = "openai-batch"


class BatchFileBackend(BatchBackend):
    name = "batch-file"


BACKENDS = {"template": TemplateBackend, "openai": OpenAIBackend, "openai-batch": OpenAIBatchBackend,
            "batch-file": BatchFileBackend}
