"""Stage 2 answer backends: `template` (offline, from the geometry) and `openai` (any OpenAI-compatible server).

The OpenAI backend retries 429, 5xx, timeouts, connection errors and malformed
replies with exponential backoff and full jitter, honouring Retry-After; other
4xx answers fail the request at once. The API key comes from OPENAI_API_KEY
only and is never printed, logged or written.
"""

import asyncio
import email.utils
import os
import random
import time
from dataclasses import dataclass

from batchkit.errors import UserError
from .prompts import KIND_TO_FUNCTION, PROMPT_FUNCTIONS, seeded_rng

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_BACKOFF = 1.0          # seconds, the first retry's upper bound; doubles per attempt
MAX_BACKOFF = 60.0
DEFAULT_TEMPERATURE = 0.7


@dataclass
class Reply:
    text: str
    tokens: int = 0


class RequestFailed(Exception):
    """The request could not be answered (after retries); the batch goes on."""


class MalformedReply(Exception):
    """A 200 answer without a usable message; retried like a server error."""


class ServerUnreachable(Exception):
    """No connection to the server after retries; the run stops (a rerun resumes)."""


class TemplateBackend:
    """Writes the answers from the geometry itself, with seeded, varied phrasing."""

    name = "template"
    model = "template"

    def __init__(self, seed=0, **_):
        self.seed = seed

    def describe(self):
        return f"template backend (offline, seed {self.seed})"

    async def ask(self, request):
        text = PROMPT_FUNCTIONS[KIND_TO_FUNCTION[request.kind]].template(request, seeded_rng(self.seed, request.id + ":answer"))
        return Reply(text)

    async def close(self):
        pass


class OpenAIBackend:
    """Chat completions from any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp) via the openai package."""

    name = "openai"

    def __init__(self, model=DEFAULT_MODEL, base_url=None, timeout=DEFAULT_TIMEOUT, max_retries=DEFAULT_MAX_RETRIES,
                 backoff=DEFAULT_BACKOFF, temperature=DEFAULT_TEMPERATURE, seed=0, **_):
        import openai
        self.openai = openai
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            raise UserError("OPENAI_API_KEY is not set; export your key (for a local vLLM/Ollama/llama.cpp server "
                            "any value, e.g. OPENAI_API_KEY=EMPTY), or use --backend template")
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.model, self.max_retries, self.backoff, self.temperature = model, max_retries, backoff, temperature
        self.rng = random.Random(seed)
        self.client = openai.AsyncOpenAI(api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0)

    def describe(self):
        return f"openai backend, model {self.model} at {self.base_url}"

    def _retry_after(self, error):
        response = getattr(error, "response", None)
        if response is None:
            return None
        value = response.headers.get("retry-after-ms")
        if value:
            try:
                return float(value) / 1000.0
            except ValueError:
                pass
        value = response.headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time()) if when else None

    def _delay(self, attempt, error):
        delay = self.rng.uniform(0, min(MAX_BACKOFF, self.backoff * 2 ** attempt))     # full jitter
        wait = self._retry_after(error)
        return max(delay, wait) if wait is not None else delay

    async def ask(self, request):
        o = self.openai
        messages = [{"role": "system", "content": request.system_text()}, {"role": "user", "content": request.user}]
        last = None
        for attempt in range(self.max_retries + 1):
            try:
                response = await self.client.chat.completions.create(model=self.model, messages=messages,
                                                                     temperature=self.temperature)
                try:
                    text = response.choices[0].message.content
                    usage = response.usage
                    tokens = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0) if usage else 0
                except (AttributeError, IndexError, TypeError, KeyError):
                    text = None
                if not isinstance(text, str):
                    raise MalformedReply("reply without choices[0].message.content")
                return Reply(text, tokens)
            except (o.RateLimitError, o.InternalServerError, o.APITimeoutError, o.APIConnectionError,
                    o.APIResponseValidationError, MalformedReply, ValueError) as e:   # ValueError: a body that is not JSON
                last = e
            except o.APIStatusError as e:
                raise RequestFailed(f"{request.id}: server answered {e.status_code} ({_short(e)}); "
                                    f"{_hint(e.status_code)}") from None
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, last))
        if isinstance(last, o.APIConnectionError) and not isinstance(last, o.APITimeoutError):
            raise ServerUnreachable(f"cannot reach {self.base_url} ({_short(last)}) after {self.max_retries + 1} "
                                    "attempts; is the server running and --base-url right? Rerun to resume")
        raise RequestFailed(f"{request.id}: {_describe(last, o)} after {self.max_retries + 1} attempts")

    async def close(self):
        await self.client.close()


def _short(error):
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _describe(error, o):
    if isinstance(error, o.RateLimitError):
        return "rate limited (429)"
    if isinstance(error, o.APITimeoutError):
        return "timed out (raise --timeout?)"
    if isinstance(error, o.InternalServerError):
        return f"server error {error.status_code}"
    if isinstance(error, (o.APIResponseValidationError, MalformedReply, ValueError)):
        return "malformed reply"
    return _short(error)


def _hint(status):
    return {401: "check OPENAI_API_KEY", 403: "check the key's permissions", 404: "check --model and --base-url",
            400: "the server refused the request; check --model"}.get(status, "see the server's log")


BACKENDS = {"template": TemplateBackend, "openai": OpenAIBackend}
