"""create_rotation_prompt: where is A relative to B when the scene is seen from its left, its right or behind."""

import re
from pathlib import PurePosixPath

from batchkit.errors import RecordError

from .base import Request, contradiction, object_tags, pairs_of, plain_words, relation_phrase, seeded_rng, views

DEFAULT_PAIRS_PER_VIEW = 2
VIEW_PHRASES = {"left": "from its left side", "right": "from its right side", "back": "from behind"}
# where the viewer stands, which is not a relation between the objects ("on the left side of" is one, and stays)
VIEWPOINT_RE = re.compile(r"\bfrom (?:its |the (?:scene's )?)?(?:left|right)(?: side)?\b|\bfrom (?:behind|the back)\b")


def build(key, record, box_norm="pad", seed=0, pairs_per_view=DEFAULT_PAIRS_PER_VIEW, **_):
    tags = object_tags(key, record, box_norm)
    found = views(key, record)
    stem = PurePosixPath(key).stem
    requests = []
    for view, phrase in VIEW_PHRASES.items():
        pairs = pairs_of(found[view]["relations"], tags)
        rng = seeded_rng(seed, f"{stem}_rotation_{view}")
        for a, b, rel in sorted(rng.sample(pairs, min(pairs_per_view, len(pairs)))):
            if rng.random() < 0.5:                      # ask about either object of the pair
                a, b, rel = b, a, [-r for r in rel]
            A, B = tags[a][0], tags[b][0]
            rid = f"{stem}_rotation_{view}_{a}_{b}"
            question = rng.choice([
                f"If you look at the scene {phrase}, where is {A} relative to {B}?",
                f"Imagine walking around to view this scene {phrase}. Where would {A} be relative to {B}?",
                f"Viewed {phrase}, how is {A} placed with respect to {B}?"])
            user = (f"Viewpoint: the scene seen {phrase}\nQuestion: {question}\n"
                    f"Measured relation from this viewpoint: {A} is {relation_phrase(rel)} {B}.")
            requests.append(Request(rid, key, "create_rotation_prompt", "rotation_system.txt", user, question,
                                    [tags[a][1], tags[b][1]], {"view": view, "a": A, "b": B, "relation": rel}))
    if not requests:
        raise RecordError(f"{key}: no pair with an unambiguous relation in the left, right or back view")
    return requests


def template(request, rng):
    f = request.facts
    phrase = VIEW_PHRASES[f["view"]]
    lead = rng.choice([f"Seen {phrase}", f"Looking at the scene {phrase}", f"From that viewpoint ({phrase})"])
    return f"{lead}, {f['a']} is {relation_phrase(f['relation'])} {f['b']}."


def validate(request, text):
    """The reply states every measured direction of A relative to B and none reversed (B first: all reversed)."""
    f = request.facts
    rel = f["relation"]
    a_at, b_at = text.find(f["a"]), text.find(f["b"])
    if 0 <= b_at < a_at or a_at < 0 <= b_at:
        rel = [-r for r in rel]                         # "B is to the right of A" states the same relation
    problem = contradiction(VIEWPOINT_RE.sub(" ", plain_words(text)), rel, require_all=True)
    if problem:
        return None, f"reply {problem}"
    return [(request.question, text.strip())], None
