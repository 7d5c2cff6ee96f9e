"""create_distance_prompt: metric QA (distances between objects, their sizes, distance from the camera).

From stage 1.3's per-object "centre" (median of its 3D points, camera frame,
metres) and "extent" (5th-95th percentile extent along x, y, z): distances
between centres and from the camera (the norm of the centre) rounded to 0.1 m,
sizes (width x, height y, depth z) to 0.01 m. Every number a reply states must
be one of these facts (metres, or the same length in centimetres), and a
"closer"/"farther" comparison must agree with the distances from the camera.
"""

import math
import re
from itertools import combinations
from pathlib import PurePosixPath

from batchkit.errors import RecordError

from ..tags import REF_RE
from .base import Request, object_tags, seeded_rng

DEFAULT_MAX_FACTS = 6
SIZES = (("width", 0), ("height", 1), ("depth", 2))
NUMBER_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(m|cm|metres|meters|centimetres|centimeters)\b")


def _metres(value, step):
    return round(round(value / step) * step, 2)


def build(key, record, box_norm="pad", seed=0, max_qa_pairs=DEFAULT_MAX_FACTS, **_):
    tags = object_tags(key, record, box_norm)
    shaped = {oid: obj for oid, obj in record["objects"].items()
              if oid in tags and isinstance(obj.get("centre"), list) and isinstance(obj.get("extent"), list)}
    if len(shaped) < 1:
        raise RecordError(f"{key}: no object with \"centre\" and \"extent\"; run multiview_layers.py (stage 1.3) first")
    rid = f"{PurePosixPath(key).stem}_distance"
    rng = seeded_rng(seed, rid)
    facts = []
    for a, b in combinations(sorted(shaped), 2):
        facts.append({"a": a, "b": b, "quantity": "distance",
                      "metres": _metres(math.dist(shaped[a]["centre"], shaped[b]["centre"]), 0.1)})
    for oid in sorted(shaped):
        facts.append({"a": oid, "b": None, "quantity": "camera_distance",
                      "metres": _metres(math.hypot(*shaped[oid]["centre"]), 0.1)})
        for name, axis in SIZES:
            facts.append({"a": oid, "b": None, "quantity": name, "metres": _metres(shaped[oid]["extent"][axis], 0.01)})
    if len(facts) > max_qa_pairs:
        facts = sorted(rng.sample(facts, max_qa_pairs), key=lambda f: (f["quantity"], f["a"], f["b"] or ""))
    lines = []
    for f in facts:
        a = tags[f["a"]][0]
        if f["quantity"] == "distance":
            lines.append(f"- {a} and {tags[f['b']][0]} are {f['metres']:.1f} m apart")
        elif f["quantity"] == "camera_distance":
            lines.append(f"- {a} is {f['metres']:.1f} m from the camera")
        else:
            lines.append(f"- {a} is {f['metres']:.2f} m in {f['quantity']}")
    user = "Measured from the depth (metres, camera at the origin):\n" + "\n".join(lines)
    named = sorted({f[k] for f in facts for k in ("a", "b") if f[k]})        # only these may be cited in a reply
    cited = sorted({tags[oid][1] for oid in named})
    camera = {tags[oid][0]: _metres(math.hypot(*shaped[oid]["centre"]), 0.1) for oid in named}
    extra = {"depth_source": record.get("depth_source", "sensor"), "facts": facts}
    return [Request(rid, key, "create_distance_prompt", "distance_system.txt", user, "", cited,
                    {"facts": facts, "tags": {oid: tags[oid][0] for oid in shaped}, "camera": camera}, extra)]


def template(request, rng):
    tags, out = request.facts["tags"], []
    for f in request.facts["facts"]:
        a = tags[f["a"]]
        if f["quantity"] == "distance":
            b = tags[f["b"]]
            q = rng.choice([f"How far apart are {a} and {b}?", f"What is the distance between {a} and {b}?"])
            ans = f"{a} and {b} are about {f['metres']:.1f} m apart."
        elif f["quantity"] == "camera_distance":
            q = rng.choice([f"How far is {a} from the camera?", f"How far away is {a}?"])
            ans = f"{a} is about {f['metres']:.1f} m from the camera."
        else:
            q = f"How {dict(width='wide', height='tall', depth='deep')[f['quantity']]} is {a}?"
            ans = f"{a} is about {f['metres']:.2f} m {dict(width='wide', height='tall', depth='deep')[f['quantity']]}."
        out.append(f"Q: {q}\nA: {ans}")
    near = sorted(request.facts["camera"].items(), key=lambda kv: kv[1])
    if len(near) >= 2 and near[0][1] < near[-1][1]:
        (a, _), (b, _) = near[0], near[-1]
        out.append(f"Q: Which is closer to the camera, {a} or {b}?\nA: {a} is closer to the camera than {b}.")
    return "\n".join(out)


def validate(request, text):
    """Q/A turns whose every number is one of the facts (metres or centimetres) and whose closer/farther agree."""
    from .between import parse_qa
    qa = parse_qa(text)
    if qa is None:
        return None, "reply is not 'Q: ... / A: ...' question-answer pairs"
    allowed = {round(f["metres"], 2) for f in request.facts["facts"]}
    camera = request.facts["camera"]
    for _q, answer in qa:
        plain = REF_RE.sub(" ", answer)
        for number, unit in NUMBER_RE.findall(plain):
            metres = float(number) / (100 if unit.startswith("c") else 1)
            if not any(abs(metres - v) < 0.005 for v in allowed):
                return None, f"an answer states {number} {unit}, which is not among the measured facts"
        refs = [m.group(0) for m in REF_RE.finditer(answer)]
        distinct = list(dict.fromkeys(t for t in refs if t in camera))
        if len(distinct) == 2 and re.search(r"\b(closer|nearer|farther|further)\b", answer):
            first_nearer = camera[distinct[0]] < camera[distinct[1]]
            says_nearer = re.search(r"\b(closer|nearer)\b", answer) is not None
            if camera[distinct[0]] != camera[distinct[1]] and first_nearer != says_nearer:
                return None, f"an answer's comparison contradicts the distances from the camera ({answer[:100]!r})"
    return qa, None
