"""What stage 2 costs: the tokens a run used (the server's usage, prompt and completion apart) and, before a run is
paid for, what it will use (a dry run).

A server that sends no usage is counted as unknown, never as zero. Prices are USD per million tokens.
"""

import math
from dataclasses import dataclass

from batchkit.errors import UserError
from batchkit.files import write_json

CHARS_PER_TOKEN = 4.0          # the last resort of an estimate: no tokenizer, no cached answer to learn the ratio from


@dataclass(frozen=True)
class Prices:
    price_in: float | None = None      # USD per million prompt tokens
    price_out: float | None = None     # USD per million completion tokens

    def cost(self, prompt_tokens, completion_tokens):
        if self.price_in is None or self.price_out is None or prompt_tokens is None or completion_tokens is None:
            return None
        return round(prompt_tokens * self.price_in / 1e6 + completion_tokens * self.price_out / 1e6, 6)


def usage_of(entry):
    """(prompt tokens, completion tokens) a cache entry records, each None where the server sent none."""
    usage = entry.get("usage") if isinstance(entry, dict) else None
    if not isinstance(usage, dict):
        return None, None
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def add_usage(total, reply):
    """Usage of one more reply added to a running {"prompt_tokens", "completion_tokens"} (None stays None)."""
    out = dict(total or {"prompt_tokens": 0, "completion_tokens": 0})
    for field, value in (("prompt_tokens", reply.prompt_tokens), ("completion_tokens", reply.completion_tokens)):
        out[field] = None if value is None or out[field] is None else out[field] + value
    return out


def summarise(entries, asked, prices=Prices()):
    """Requests, how many were asked in this run and how many came from the cache, and their tokens and cost."""
    known = [usage_of(e) for e in entries if usage_of(e)[0] is not None and usage_of(e)[1] is not None]
    prompt = sum(p for p, _ in known)
    completion = sum(c for _, c in known)
    return {"requests": len(entries), "asked": asked, "cached": len(entries) - asked, "prompt_tokens": prompt,
            "completion_tokens": completion, "unknown_usage": len(entries) - len(known),
            "cost_usd": prices.cost(prompt, completion)}


def write_usage(path, prompt_function, model, backend, summary, prices=Prices()):
    write_json(path, {"model": model, "backend": backend, "price_in_per_million": prices.price_in,
                      "price_out_per_million": prices.price_out, "by_prompt_function": {prompt_function: summary},
                      "total": summary})


def usage_line(summary):
    line = (f"{summary['prompt_tokens']} prompt and {summary['completion_tokens']} completion tokens"
            + (f" ({summary['unknown_usage']} requests without usage from the server: unknown)" if summary["unknown_usage"] else ""))
    return line + (f", ${summary['cost_usd']:.4f}" if summary["cost_usd"] is not None else "")


class TokenCounter:
    """Prompt tokens of chat messages: exact with a tokenizer folder (its chat template where it has one), else
    estimated from the characters per token of this output's cached answers, else from 4 characters per token."""

    def __init__(self, tokenizer_dir=None, cached_entries=()):
        self.tokenizer = None
        if tokenizer_dir:
            from transformers import AutoTokenizer
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
            except (OSError, ValueError) as e:
                raise UserError(f"--tokenizer {tokenizer_dir}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None
            self.how = f"exact (tokenizer {tokenizer_dir})"
            return
        pairs = [(e["prompt_chars"], usage_of(e)[0]) for e in cached_entries
                 if isinstance(e.get("prompt_chars"), int) and usage_of(e)[0]]
        if pairs:
            self.chars_per_token = sum(c for c, _ in pairs) / sum(t for _, t in pairs)
            self.how = f"estimated from {len(pairs)} cached answers ({self.chars_per_token:.2f} characters per token)"
        else:
            self.chars_per_token = CHARS_PER_TOKEN
            self.how = f"estimated at {CHARS_PER_TOKEN:g} characters per token"

    def count(self, messages):
        if self.tokenizer is None:
            return math.ceil(sum(len(m["content"]) for m in messages) / self.chars_per_token)
        if self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            return len(ids)
        return len(self.tokenizer("\n".join(m["content"] for m in messages))["input_ids"])


def estimate(messages, cached_entries, counter, max_tokens, prices=Prices()):
    """What asking `messages` (one list per request still to ask) will use and cost: a dict, and how it was estimated."""
    prompt = sum(counter.count(m) for m in messages)
    completions = [usage_of(e)[1] for e in cached_entries if e.get("status") == "ok" and usage_of(e)[1] is not None]
    if completions:
        expected = round(sum(completions) / len(completions) * len(messages))
        how = f"the mean of {len(completions)} cached answers"
    else:
        expected = max_tokens * len(messages)
        how = f"--max-tokens {max_tokens} each, an upper bound"
    return {"requests": len(messages), "prompt_tokens": prompt, "prompt_tokens_from": counter.how,
            "completion_tokens": expected, "completion_tokens_from": how, "cost_usd": prices.cost(prompt, expected)}
