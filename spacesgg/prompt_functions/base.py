"""What every prompt function shares: the request, the direction table, object tags and reply checks.

One table of direction words (DIRECTIONS) serves the prompts (how a relation
is phrased), the templates (how an answer states it) and the validators (which
words state it, or its reverse).
"""

import random
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from batchkit.errors import RecordError, Skipped

from ..annotations import check_label
from ..tags import BOX_RE, REF_RE, check_tags, normalise_box, ref_tag

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"


@dataclass(frozen=True)
class Direction:
    phrase: str          # "a is {phrase} b" in prompts and answers
    predicate: str       # the All-Seeing v2 <pred> text
    words: tuple         # what states this direction in a reply (regular expressions, lower case)


# axis -> (direction of -1, direction of +1); axes as the relation vector [lr, ud, fb]
DIRECTIONS = (
    (Direction("to the left of", "left of", (r"\bleft\b",)),
     Direction("to the right of", "right of", (r"\bright\b",))),
    (Direction("above", "above", (r"\babove\b", r"\bhigher\b")),
     Direction("below", "below", (r"\bbelow\b", r"\blower\b", r"\bunder(?:neath)?\b", r"\bbeneath\b"))),
    (Direction("in front of", "in front of", (r"\bin front\b", r"\bcloser\b", r"\bnearer\b")),
     Direction("behind", "behind", (r"\bbehind\b", r"\bfarther\b", r"\bfurther (?:away|back)\b"))),
)
FORBIDDEN_IN_REPLY = re.compile(r"<image>|</?s>|<\|[a-z_]+\|>|\b(?:USER|ASSISTANT)\s*:", re.IGNORECASE)


def direction(axis, sign):
    return DIRECTIONS[axis][0 if sign < 0 else 1]


def relation_phrase(rel):
    """'to the left of, above and in front of' for the non-zero components of [lr, ud, fb]."""
    words = [direction(axis, r).phrase for axis, r in enumerate(rel) if r]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


@dataclass
class Request:
    id: str
    image: str
    kind: str                # the prompt function's registry name
    system: str              # file name in prompts/
    user: str                # context for the LLM
    question: str            # the human turn (layer and rotation prompts)
    boxes: list              # boxes a reply may cite
    facts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)      # fields the output record carries besides the conversation

    def system_text(self):
        return _prompt_file(self.system)


@cache
def _prompt_file(name):
    """A system prompt, read once per run (every request of a kind shares it)."""
    return (PROMPTS_DIR / name).read_text(encoding="utf-8")


def seeded_rng(seed, request_id):
    """A random stream fixed by the seed and the request: same seed, same choices, whatever the order of work."""
    return random.Random(f"{seed}:{request_id}")


def image_size(key, record):
    size = record.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise RecordError(f"{key}: \"image_size\" {size!r} is not [width, height] in positive pixels; "
                          "run layers_aggregation.py (stage 1.2) on this annotation")
    return size


def object_tags(key, record, box_norm):
    """{id: (tag, normalised box)} for the objects of a record, boxes in 0..999; labels checked."""
    objects = record.get("objects")
    if objects == {}:
        raise Skipped(f"{key}: no objects (e.g. the detector found none); nothing to ask")
    if not isinstance(objects, dict):
        raise RecordError(f"{key}: record has no \"objects\" dict")
    width, height = image_size(key, record)
    out = {}
    for oid, obj in objects.items():
        if not isinstance(obj, dict) or not isinstance(obj.get("depth"), dict):
            continue                                      # stage 1.2 left it out
        check_label(key, oid, obj.get("label"))
        nbox = normalise_box(obj["box"], width, height, box_norm)
        out[oid] = (ref_tag(obj["label"].strip(), nbox), nbox)
    return out


def views(key, record):
    found = record.get("views")
    if not isinstance(found, dict) or not found:
        raise RecordError(f"{key}: no \"views\"; run multiview_layers.py (stage 1.3) on this annotation first")
    return found


def pairs_of(relations, tags):
    """Unordered pairs (a, b, rel) with a non-zero relation, each once, in a stable order."""
    out = []
    for name, rel in relations.items():
        a, b = name.split(">")
        if a < b and any(rel) and a in tags and b in tags:
            out.append((a, b, list(rel)))
    return sorted(out)


def relations_by_box(relations, tags):
    """{"x1,y1,x2,y2|x1,..": rel} for every ordered pair of tagged objects, keyed by their normalised boxes."""
    out = {}
    for name, rel in relations.items():
        a, b = name.split(">")
        if a in tags and b in tags:
            out[f"{box_key(tags[a][1])}|{box_key(tags[b][1])}"] = list(rel)
    return out


def box_key(box):
    return ",".join(str(int(v)) for v in box)


def reply_problem(text, boxes, max_chars):
    """Checks every reply gets: size, no chat-template tokens, well-formed tags citing only the prompt's boxes."""
    if len(text) > max_chars:
        return f"reply is {len(text)} characters, more than --max-reply-chars {max_chars}"
    bad = FORBIDDEN_IN_REPLY.search(text)
    if bad:
        return f"reply holds {bad.group(0)!r}, which would break LLaVA's image splicing or label masking"
    return check_tags(text, boxes)


def plain_words(text):
    """The reply in lower case with its tags and boxes blanked (labels may hold direction words)."""
    return re.sub(r"<[^>]*>|\[\[[^\]]*\]\]", " ", REF_RE.sub(" X ", text)).lower()


def stated(text, axis):
    """(states the -1 direction, states the +1 direction) of `axis` in plain reply text."""
    return tuple(any(re.search(w, text) for w in DIRECTIONS[axis][k].words) for k in (0, 1))


def contradiction(text, rel, require_all=False):
    """Why `text` (plain words) contradicts the relation [lr, ud, fb] of its first object to its second, or None.

    A direction stated only in reverse is a contradiction; so is one stated along an axis where the relation is
    ambiguous (0). With require_all, every non-zero direction must be stated.
    """
    for axis, r in enumerate(rel):
        neg, pos = stated(text, axis)
        if r == 0 and neg != pos:
            return f"states '{direction(axis, -1 if neg else 1).phrase}', which was not measured"
        if r and (pos if r < 0 else neg) and not (neg if r < 0 else pos):
            return f"states '{direction(axis, -r).phrase}', the reverse of the measured '{direction(axis, r).phrase}'"
        if r and require_all and not (neg if r < 0 else pos):
            return f"does not state '{direction(axis, r).phrase}' (measured: {relation_phrase(rel)})"
    return None


def check_sentence(sentence, relations):
    """A sentence that cites two objects (by box) must not contradict their measured relation; None or why."""
    boxes = [box_key(b) for b in (tuple(int(v) for v in m) for m in BOX_RE.findall(sentence))]
    distinct = list(dict.fromkeys(boxes))
    if len(distinct) != 2:
        return None
    rel = relations.get(f"{distinct[0]}|{distinct[1]}")
    if rel is None:
        return None
    problem = contradiction(plain_words(sentence), rel)
    return f"{problem} ({sentence.strip()[:120]!r})" if problem else None


def join(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
