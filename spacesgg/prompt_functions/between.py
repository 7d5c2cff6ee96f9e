"""create_between_prompt (alias create_comparative_prompt): comparative question-answer turns per image."""

import re
from pathlib import PurePosixPath

from batchkit.errors import RecordError

from ..tags import pred_tag
from .base import Request, check_sentence, direction, object_tags, pairs_of, relation_phrase, relations_by_box, seeded_rng, views

DEFAULT_MAX_QA_PAIRS = 12
QA_RE = re.compile(r"^\s*(?:\d+[.)]\s*)?\**(Q|Question|A|Answer)\**\s*[:.]\s*(.*)$", re.IGNORECASE)


def build(key, record, box_norm="pad", seed=0, max_qa_pairs=DEFAULT_MAX_QA_PAIRS, **_):
    tags = object_tags(key, record, box_norm)
    relations = views(key, record)["front"]["relations"]
    pairs = pairs_of(relations, tags)
    if not pairs:
        raise RecordError(f"{key}: no pair of objects with an unambiguous relation")
    rid = f"{PurePosixPath(key).stem}_between"
    rng = seeded_rng(seed, rid)
    if len(pairs) > max_qa_pairs:
        pairs = sorted(rng.sample(pairs, max_qa_pairs))
    lines = [f"- {tags[a][0]} is {relation_phrase(rel)} {tags[b][0]}" for a, b, rel in pairs]
    user = "Objects and relations seen from the camera:\n" + "\n".join(lines)
    cited = {o for a, b, _ in pairs for o in (a, b)}
    facts = {"pairs": [[tags[a][0], tags[b][0], rel, tags[a][1], tags[b][1]] for a, b, rel in pairs],
             "relations": relations_by_box(relations, {o: tags[o] for o in cited})}
    boxes = sorted({tags[o][1] for o in cited})
    return [Request(rid, key, "create_between_prompt", "between_system.txt", user, "", boxes, facts)]


def _qa(axis, r, A, B, a_box, b_box, rng):
    """One question-answer pair about one axis of a relation (r = -1 or +1: A's side of B), citing both objects."""
    d = direction(axis, r)
    stated = rng.choice([f"{A} is {d.phrase} {B}.", f"{A} is {pred_tag(d.predicate, a_box, b_box)} {B}."])
    if axis == 0:
        q = rng.choice([f"Is {A} to the left or to the right of {B}?", f"On which side of {B} is {A}?"])
    elif axis == 1:
        q = rng.choice([f"Is {A} above or below {B}?", f"Which is higher in the scene, {A} or {B}?"])
        if q.startswith("Which"):
            stated = f"{A} is {'higher' if r < 0 else 'lower'} than {B}."
    else:
        q = rng.choice([f"Which is closer to the camera, {A} or {B}?", f"Is {A} in front of or behind {B}?"])
        if q.startswith("Which"):
            stated = f"{A} is {'closer to' if r < 0 else 'farther from'} the camera than {B}."
    return q, stated


def template(request, rng):
    pairs = list(request.facts["pairs"])
    rng.shuffle(pairs)
    out = []
    for A, B, rel, a_box, b_box in pairs[: rng.randint(2, 4)]:
        axis = rng.choice([i for i, r in enumerate(rel) if r])
        q, a = _qa(axis, rel[axis], A, B, a_box, b_box, rng)
        out.append(f"Q: {q}\nA: {a}")
    return "\n".join(out)


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


def validate(request, text):
    """Q/A turns whose every answer sentence agrees with the measured relations of the objects it cites."""
    qa = parse_qa(text)
    if qa is None:
        return None, "reply is not 'Q: ... / A: ...' question-answer pairs"
    for _q, answer in qa:
        for sentence in re.split(r"(?<=[.!?;])\s+", answer):
            problem = check_sentence(sentence, request.facts["relations"])
            if problem:
                return None, f"an answer contradicts the measured relations: {problem}"
    return qa, None
