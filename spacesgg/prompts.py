"""Stage 2 prompt functions: requests built from the stage-1 geometry, template answers, reply parsing.

Each prompt function turns one annotation record into requests. A request
carries the system prompt (a file in prompts/), the user context for an LLM,
the human question of the conversation, the boxes the reply may cite, and
the geometric facts from which the template backend answers and against
which replies are checked.
"""

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from batchkit.errors import RecordError
from .tags import REF_RE, check_tags, normalise_box, pred_tag, ref_tag

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
AXIS_WORDS = (("to the left of", "to the right of"), ("above", "below"), ("in front of", "behind"))
AXIS_PREDICATES = (("left of", "right of"), ("above", "below"), ("in front of", "behind"))
VIEW_PHRASES = {"left": "from its left side", "right": "from its right side", "back": "from behind"}
ROTATION_VIEWS = tuple(VIEW_PHRASES)
DEFAULT_PAIRS_PER_VIEW = 2
DEFAULT_MAX_QA_PAIRS = 12


@dataclass
class Request:
    id: str
    image: str
    kind: str
    system: str              # file name in prompts/
    user: str                # context for the LLM
    question: str            # the human turn (layer and rotation prompts)
    boxes: list              # boxes a reply may cite
    facts: dict = field(default_factory=dict)

    def system_text(self):
        return _prompt_file(self.system)


@lru_cache(maxsize=None)
def _prompt_file(name):
    """A system prompt, read once per run (every request of a kind shares it)."""
    return (PROMPTS_DIR / name).read_text(encoding="utf-8")


def seeded_rng(seed, request_id):
    """A random stream fixed by the seed and the request: same seed, same choices, whatever the order of work."""
    return random.Random(f"{seed}:{request_id}")


def object_tags(key, record, box_norm):
    """{id: tag} for the objects of a record, boxes normalised to 0..999."""
    size = record.get("image_size")
    if not size:
        raise RecordError(f"{key}: no \"image_size\"; run layers_aggregation.py (stage 1.2) on this annotation first")
    width, height = size
    out = {}
    for oid, obj in record.get("objects", {}).items():
        nbox = normalise_box(obj["box"], width, height, box_norm)
        out[oid] = (ref_tag(obj["label"], nbox), nbox)
    return out


def _views(key, record):
    views = record.get("views")
    if not views:
        raise RecordError(f"{key}: no \"views\"; run multiview_layers.py (stage 1.3) on this annotation first")
    return views


def relation_phrase(rel):
    """'to the left of, above and in front of' for the non-zero components of [lr, ud, fb]."""
    words = [AXIS_WORDS[axis][0 if r < 0 else 1] for axis, r in enumerate(rel) if r]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _pairs(relations, tags):
    """Unordered pairs (a, b, rel) with a non-zero relation, each once, in a stable order."""
    out = []
    for name, rel in relations.items():
        a, b = name.split(">")
        if a < b and any(rel) and a in tags and b in tags:
            out.append((a, b, rel))
    return sorted(out)


# ---- layers -------------------------------------------------------------------------------

LAYER_QUESTIONS = (
    "Describe the scene layer by layer, from the nearest objects to the farthest.",
    "What is in this image, from near to far?",
    "Walk me through the depth layers of this scene, starting closest to the camera.",
    "Describe how the objects in this picture are arranged in depth.",
)


def create_layer_prompt(key, record, box_norm="pad", seed=0, **_):
    tags = object_tags(key, record, box_norm)
    levels = [[o for o in level if o in tags] for level in _views(key, record)["front"]["levels"]]
    levels = [level for level in levels if level]
    if not levels:
        raise RecordError(f"{key}: no object in any layer")
    stem = PurePosixPath(key).stem
    lines = [f"Layer {k + 1}: " + ", ".join(tags[o][0] for o in level) for k, level in enumerate(levels)]
    user = (f"Caption: {record.get('caption', '')}\nLayers from near to far:\n" + "\n".join(lines))
    rid = f"{stem}_layer"
    return [Request(rid, key, "layer", "layer_system.txt", user, seeded_rng(seed, rid).choice(LAYER_QUESTIONS),
                    [tags[o][1] for level in levels for o in level],
                    {"levels": [[tags[o][0] for o in level] for level in levels]})]


def _join(items):
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def template_layer(request, rng):
    levels = request.facts["levels"]
    starts = ["Closest to the camera", "In the foreground", "Nearest to the viewer"]
    middles = ["Behind that", "Further back", "A little farther away", "Next in depth"]
    ends = ["At the back", "Farthest away", "In the background"]
    parts = []
    for k, level in enumerate(levels):
        verb = "is" if len(level) == 1 else "are"
        if k == 0:
            lead = rng.choice(starts)
        elif k == len(levels) - 1:
            lead = rng.choice(ends)
        else:
            lead = rng.choice(middles)
        parts.append(f"{lead} {verb} {_join(level)}.")
    return " ".join(parts)


# ---- comparative QA -----------------------------------------------------------------------

def create_between_prompt(key, record, box_norm="pad", seed=0, max_qa_pairs=DEFAULT_MAX_QA_PAIRS, **_):
    tags = object_tags(key, record, box_norm)
    pairs = _pairs(_views(key, record)["front"]["relations"], tags)
    if not pairs:
        raise RecordError(f"{key}: no pair of objects with an unambiguous relation")
    stem = PurePosixPath(key).stem
    rid = f"{stem}_between"
    rng = seeded_rng(seed, rid)
    if len(pairs) > max_qa_pairs:
        pairs = sorted(rng.sample(pairs, max_qa_pairs))
    lines = [f"- {tags[a][0]} is {relation_phrase(rel)} {tags[b][0]}" for a, b, rel in pairs]
    user = "Objects and relations seen from the camera:\n" + "\n".join(lines)
    facts = {"pairs": [[tags[a][0], tags[b][0], rel, tags[a][1], tags[b][1]] for a, b, rel in pairs]}
    boxes = sorted({tags[o][1] for a, b, _ in pairs for o in (a, b)})
    return [Request(rid, key, "between", "between_system.txt", user, "", boxes, facts)]


def _qa_for_axis(axis, r, A, B, a_box, b_box, rng):
    """One question-answer pair about one axis of a relation (r = -1 or +1, A's side of B)."""
    if axis == 0:
        side = "left" if r < 0 else "right"
        q = rng.choice([f"Is {A} to the left or to the right of {B}?", f"On which side of {B} is {A}?"])
        a = rng.choice([f"{A} is to the {side} of {B}.",
                        f"It is on the {side}: {pred_tag(AXIS_PREDICATES[0][r > 0], a_box, b_box)}."])
    elif axis == 1:
        where = "above" if r < 0 else "below"
        q = rng.choice([f"Is {A} above or below {B}?", f"Which is higher in the scene, {A} or {B}?"])
        if q.startswith("Which"):
            a = f"{A if r < 0 else B} is higher."
        else:
            a = rng.choice([f"{A} is {where} {B}.", f"It is {where}: {pred_tag(AXIS_PREDICATES[1][r > 0], a_box, b_box)}."])
    else:
        q = rng.choice([f"Which is closer to the camera, {A} or {B}?", f"Is {A} in front of or behind {B}?"])
        if q.startswith("Which"):
            a = f"{A if r < 0 else B} is closer to the camera."
        else:
            a = rng.choice([f"{A} is {'in front of' if r < 0 else 'behind'} {B}.",
                            f"{pred_tag(AXIS_PREDICATES[2][r > 0], a_box, b_box)}: {A} is {'nearer' if r < 0 else 'farther'}."])
    return q, a


def template_between(request, rng):
    pairs = list(request.facts["pairs"])
    rng.shuffle(pairs)
    out = []
    for A, B, rel, a_box, b_box in pairs[: rng.randint(2, 4)]:
        axis = rng.choice([i for i, r in enumerate(rel) if r])
        q, a = _qa_for_axis(axis, rel[axis], A, B, a_box, b_box, rng)
        out.append(f"Q: {q}\nA: {a}")
    return "\n".join(out)


QA_RE = re.compile(r"^\s*(?:\d+[.)]\s*)?\**(Q|Question|A|Answer)\**\s*[:.]\s*(.*)$", re.IGNORECASE)


def parse_qa(text):
    """[(question, answer), ...] from 'Q: ... / A: ...' lines; None if the reply has no well-formed pair."""
    turns, current = [], None
    for line in text.splitlines():
        m = QA_RE.match(line)
        if m:
            role = "q" if m.group(1).lower().startswith("q") else "a"
            current = [role, m.group(2).strip()]
            turns.append(current)
        elif current is not None and line.strip():
            current[1] += " " + line.strip()
    if not turns or len(turns) % 2 or any(t[0] != ("q" if k % 2 == 0 else "a") for k, t in enumerate(turns)):
        return None
    pairs = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns), 2)]
    return pairs if all(q and a for q, a in pairs) else None


# ---- rotation -----------------------------------------------------------------------------

def create_rotation_prompt(key, record, box_norm="pad", seed=0, pairs_per_view=DEFAULT_PAIRS_PER_VIEW, **_):
    tags = object_tags(key, record, box_norm)
    views = _views(key, record)
    stem = PurePosixPath(key).stem
    requests = []
    for view in ROTATION_VIEWS:
        pairs = _pairs(views[view]["relations"], tags)
        rng = seeded_rng(seed, f"{stem}_rotation_{view}")
        for a, b, rel in sorted(rng.sample(pairs, min(pairs_per_view, len(pairs)))):
            if rng.random() < 0.5:                      # ask about either object of the pair
                a, b, rel = b, a, [-r for r in rel]
            A, B = tags[a][0], tags[b][0]
            rid = f"{stem}_rotation_{view}_{a}_{b}"
            question = rng.choice([
                f"If you look at the scene {VIEW_PHRASES[view]}, where is {A} relative to {B}?",
                f"Imagine walking around to view this scene {VIEW_PHRASES[view]}. Where would {A} be relative to {B}?",
                f"Viewed {VIEW_PHRASES[view]}, how is {A} placed with respect to {B}?"])
            user = (f"Viewpoint: the scene seen {VIEW_PHRASES[view]}\nQuestion: {question}\n"
                    f"Measured relation from this viewpoint: {A} is {relation_phrase(rel)} {B}.")
            requests.append(Request(rid, key, "rotation", "rotation_system.txt", user, question, [tags[a][1], tags[b][1]],
                                    {"view": view, "a": A, "b": B, "relation": rel}))
    if not requests:
        raise RecordError(f"{key}: no pair with an unambiguous relation in the left, right or back view")
    return requests


def template_rotation(request, rng):
    f = request.facts
    lead = rng.choice([f"Seen {VIEW_PHRASES[f['view']]}", f"Looking at the scene {VIEW_PHRASES[f['view']]}",
                       f"From that viewpoint ({VIEW_PHRASES[f['view']]})"])
    return f"{lead}, {f['a']} is {relation_phrase(f['relation'])} {f['b']}."


_VIEWPOINT_WORDS = re.compile(r"\b(?:(?:left|right) side|from (?:the )?(?:left|right|behind|back)|from its (?:left|right))\b",
                              re.IGNORECASE)
_DIRECTION_PATTERNS = (("left", "right"), ("above", "below"), ("in front", "behind"))


def check_rotation(request, text):
    """None if the reply states every measured direction and none reversed, else the reason."""
    plain = re.sub(r"<[^>]*>|\[\[[^\]]*\]\]", " ", REF_RE.sub(" X ", text))      # labels may hold direction words
    plain = _VIEWPOINT_WORDS.sub(" ", plain).lower()
    for axis, r in enumerate(request.facts["relation"]):
        if not r:
            continue
        want, opposite = _DIRECTION_PATTERNS[axis][0 if r < 0 else 1], _DIRECTION_PATTERNS[axis][1 if r < 0 else 0]
        if want not in plain:
            return f"reply does not say '{want}' (measured relation: {relation_phrase(request.facts['relation'])})"
        if re.search(rf"\b{opposite}\b", plain):
            return f"reply says '{opposite}', the reverse of the measured relation"
    return None


# ---- registry -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptFunction:
    build: object            # (key, record, **options) -> [Request]
    template: object         # (request, rng) -> reply text
    multi_turn: bool         # reply parsed into Q/A turns


PROMPT_FUNCTIONS = {
    "create_layer_prompt": PromptFunction(create_layer_prompt, template_layer, False),
    "create_between_prompt": PromptFunction(create_between_prompt, template_between, True),
    "create_rotation_prompt": PromptFunction(create_rotation_prompt, template_rotation, False),
}
PROMPT_ALIASES = {"create_comparative_prompt": "create_between_prompt"}
KIND_TO_FUNCTION = {"layer": "create_layer_prompt", "between": "create_between_prompt", "rotation": "create_rotation_prompt"}


def resolve_prompt_function(name):
    return PROMPT_ALIASES.get(name, name)


def check_reply(request, text):
    """(None, [(question, answer), ...]) if the reply is usable for this request, else (the reason, None)."""
    reason = check_tags(text, request.boxes)
    if reason:
        return reason, None
    if PROMPT_FUNCTIONS[KIND_TO_FUNCTION[request.kind]].multi_turn:
        qa = parse_qa(text)
        if qa is None:
            return "reply is not 'Q: ... / A: ...' question-answer pairs", None
        return None, qa
    if request.kind == "rotation":
        reason = check_rotation(request, text)
        if reason:
            return reason, None
    return None, [(request.question, text.strip())]


def conversation(turns):
    """LLaVA conversation turns, with the <image> token in the first human turn."""
    out = []
    for k, (q, a) in enumerate(turns):
        out.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q})
        out.append({"from": "gpt", "value": a})
    return out
