"""Stage 2 prompt functions, one registry entry each: its request builder, its template answer, its validator.

A builder turns one annotation record into requests (system prompt file,
user context, question, the boxes a reply may cite, and the measured facts);
the template backend answers from those facts; the validator turns a reply
into conversation turns or says why it is rejected. Every reply first passes
the shared checks of base.reply_problem.
"""

from dataclasses import dataclass

from . import between, distance, layer, rotation
from .base import Request, reply_problem, seeded_rng

DEFAULT_MAX_REPLY_CHARS = 20000


@dataclass(frozen=True)
class PromptFunction:
    build: object            # (key, record, **options) -> [Request]
    template: object         # (request, rng) -> reply text
    validate: object         # (request, text) -> (turns, None) or (None, reason)


PROMPT_FUNCTIONS = {
    "create_layer_prompt": PromptFunction(layer.build, layer.template, layer.validate),
    "create_between_prompt": PromptFunction(between.build, between.template, between.validate),
    "create_rotation_prompt": PromptFunction(rotation.build, rotation.template, rotation.validate),
    "create_distance_prompt": PromptFunction(distance.build, distance.template, distance.validate),
}
PROMPT_ALIASES = {"create_comparative_prompt": "create_between_prompt"}
DEFAULT_PAIRS_PER_VIEW = rotation.DEFAULT_PAIRS_PER_VIEW
DEFAULT_MAX_QA_PAIRS = between.DEFAULT_MAX_QA_PAIRS


def resolve_prompt_function(name):
    return PROMPT_ALIASES.get(name, name)


def check_reply(request, text, max_chars=DEFAULT_MAX_REPLY_CHARS):
    """(None, [(question, answer), ...]) if the reply is usable for this request, else (the reason, None)."""
    reason = reply_problem(text, request.boxes, max_chars)
    if reason:
        return reason, None
    turns, reason = PROMPT_FUNCTIONS[request.kind].validate(request, text)
    return reason, turns


def conversation(turns):
    """LLaVA conversation turns, with the <image> token in the first human turn."""
    out = []
    for k, (q, a) in enumerate(turns):
        out.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q})
        out.append({"from": "gpt", "value": a})
    return out


__all__ = [
    "DEFAULT_MAX_QA_PAIRS",
    "DEFAULT_MAX_REPLY_CHARS",
    "DEFAULT_PAIRS_PER_VIEW",
    "PROMPT_ALIASES",
    "PROMPT_FUNCTIONS",
    "Request",
    "check_reply",
    "conversation",
    "resolve_prompt_function",
    "seeded_rng",
]
