"""Score a VLM's answers to the benchmark exactly, from the geometry, with no LLM judge.

    python -m spacesgg.score --benchmark outputs/benchmark/benchmark.jsonl --predictions outputs/benchmark/template.jsonl --output outputs/benchmark/template.scores.json

Qualitative items (left_right, above_below, front_behind): the answer is the
choice whose words the prediction states (case, punctuation and the objects'
labels ignored; synonyms from the one direction-word table, e.g. "closer" for
"in front"); a prediction stating both choices or neither is unparsed, and wrong.
Quantitative items (distance, camera_distance, width, height): the first
number with a unit (m, metre/meter(s), cm, mm, km, ft/foot/feet,
in/inch(es), yd/yard(s); digits or a number word up to twenty) in metres;
success_25 = 0.75 <= pred/true <= 1.25 and success_2x = max(pred/true,
true/pred) < 2 (unparsed answers count as failures), abs_rel = the mean of
|pred - true| / true over the parsed ones. Scene graphs: ASMv2 markup
(<ref>, <pred>, <box> in 0..999 on the image padded to a square, undone with
the same integer offset) parsed into triplets; a ground-truth triplet is
recalled when a predicted one has the same subject label with box IoU >= 0.5,
the same object label with IoU >= 0.5 and the same predicate (a relation and
its inverse, "A left of B" and "B right of A", are the same fact); recall
pooled over all triplets, mean_recall the mean over predicates, and the mean
of per-image recall. Missing predictions are scored wrong and counted. Every
metric has a 95% bootstrap interval over images (seeded).
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from batchkit.batch import Tally, printable
from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from batchkit.files import write_json
from spacesgg.benchmark import QUALITATIVE, QUANTITATIVE, TYPES
from spacesgg.prompt_functions.base import DIRECTIONS
from spacesgg.tags import PRED_RE, REF_RE, pixel_box

UNITS = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0, "cm": 0.01, "centimetre": 0.01,
         "centimetres": 0.01, "centimeter": 0.01, "centimeters": 0.01, "mm": 0.001, "millimetre": 0.001,
         "millimetres": 0.001, "millimeter": 0.001, "millimeters": 0.001, "km": 1000.0, "kilometre": 1000.0,
         "kilometres": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0, "ft": 0.3048, "foot": 0.3048, "feet": 0.3048,
         "in": 0.0254, "inch": 0.0254, "inches": 0.0254, "yd": 0.9144, "yard": 0.9144, "yards": 0.9144}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
QUANTITY_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+|" + "|".join(NUMBER_WORDS) + r")\s*-?\s*("
                         + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + r")\b", re.IGNORECASE)
IOU_MIN = 0.5
BOOTSTRAP = 1000


def _direction_of(text):
    """(axis, sign) of the direction a predicate or choice states, by the direction-word table; None if not one."""
    text = f" {text.lower()} "
    found = [(axis, sign) for axis, pair in enumerate(DIRECTIONS) for sign, d in ((-1, pair[0]), (1, pair[1]))
             if any(re.search(w, text) for w in d.words) or d.predicate in text]
    return found[0] if len(found) == 1 else None


def parse_choice(prediction, choices, labels=()):
    """The one choice a prediction states, or None (both, or neither)."""
    text = f" {REF_RE.sub(' ', str(prediction)).lower()} "
    for label in sorted(labels, key=len, reverse=True):              # labels may hold direction words
        text = text.replace(label.lower(), " ")
    text = re.sub(r"[^\w\s]", " ", text)
    stated = []
    for choice in choices:
        d = _direction_of(choice)
        words = DIRECTIONS[d[0]][0 if d[1] < 0 else 1].words if d else (rf"\b{re.escape(choice.lower())}\b",)
        if any(re.search(w, text) for w in words):
            stated.append(choice)
    return stated[0] if len(stated) == 1 else None


def parse_metres(prediction):
    """The first number with a unit in a prediction, in metres, or None."""
    m = QUANTITY_RE.search(str(prediction))
    if not m:
        return None
    number = m.group(1).lower()
    value = float(NUMBER_WORDS.index(number)) if number in NUMBER_WORDS else float(number)
    return value * UNITS[m.group(2).lower()]


def canonical(subject, predicate, obj):
    """(axis, subject, object) with the relation read along its -1 direction ("B right of A" is "A left of B")."""
    d = _direction_of(predicate)
    if d is None:
        return None
    axis, sign = d
    return (axis, subject, obj) if sign < 0 else (axis, obj, subject)


def parse_triplets(prediction, width, height):
    """[(axis, (label, pixel box), (label, pixel box))] of the ASMv2 relations in a prediction."""
    text = str(prediction)
    labels = {}
    for m in REF_RE.finditer(text):
        tag = m.group(0)
        labels.setdefault(tuple(int(v) for v in m.groups()), tag[len("<ref>"):tag.index("</ref>")].strip().lower())
    out = []
    for m in PRED_RE.finditer(text):
        tag = m.group(0)
        predicate = tag[len("<pred>"):tag.index("</pred>")]
        values = [int(v) for v in m.groups()]
        s_box, o_box = tuple(values[:4]), tuple(values[4:])
        if s_box in labels and o_box in labels:
            found = canonical((labels[s_box], pixel_box(s_box, width, height)), predicate,
                              (labels[o_box], pixel_box(o_box, width, height)))
            if found:
                out.append(found)
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def recalled(truth, predicted):
    """Which ground-truth triplets (canonical) some predicted triplet recalls, by ASMv2's rule."""
    out = []
    for axis, (sl, sb), (ol, ob) in truth:
        out.append(any(p_axis == axis and p_sl == sl and p_ol == ol and iou(p_sb, sb) >= IOU_MIN and iou(p_ob, ob) >= IOU_MIN
                       for p_axis, (p_sl, p_sb), (p_ol, p_ob) in predicted))
    return out


def truth_triplets(item):
    out = []
    for t in item["triplets"]:
        c = canonical((t["subject"]["label"].strip().lower(), t["subject"]["box"]), t["predicate"],
                      (t["object"]["label"].strip().lower(), t["object"]["box"]))
        if c is None:
            raise ValueError(f"predicate {t['predicate']!r} is not in the direction table")
        out.append(c)
    return out


def read_jsonl(path, what, tally):
    """The JSON objects of a JSONL file; a line that is not one is one error line, the rest are read."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"a {type(row).__name__}, not an object")
                rows.append(row)
            except ValueError as e:
                tally.fail(f"{path} line {n}: not a JSON object ({str(e)[:80]})")
    return rows


class Scores:
    """Per-item outcomes grouped by image, for the metrics and their bootstrap intervals."""

    def __init__(self):
        self.values = defaultdict(lambda: defaultdict(list))     # metric -> image -> values (for means)
        self.counts = defaultdict(int)

    def add(self, metric, image, value):
        self.values[metric][image].append(float(value))

    def mean(self, metric):
        values = [v for vs in self.values[metric].values() for v in vs]
        return float(np.mean(values)) if values else None

    def interval(self, metric, rng):
        """95% bootstrap interval of the pooled mean, resampling images."""
        per_image = self.values[metric]
        if not per_image:
            return None
        sums = np.array([sum(v) for v in per_image.values()])
        counts = np.array([len(v) for v in per_image.values()])
        picks = rng.integers(len(sums), size=(BOOTSTRAP, len(sums)))
        means = sums[picks].sum(axis=1) / np.maximum(counts[picks].sum(axis=1), 1)
        return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def _type_scores(items, predictions, seed):
    rng = np.random.default_rng(seed)
    kind = items[0]["type"]
    s = Scores()
    unparsed = missing = 0
    by_predicate = defaultdict(list)
    for item in items:
        image = item.get("image")
        prediction = predictions.get(item["id"])
        missing += prediction is None
        if kind in QUALITATIVE or item.get("choices"):
            labels = [o["label"] for o in item.get("objects", {}).values()]
            choice = None if prediction is None else parse_choice(prediction, item["choices"], labels)
            unparsed += prediction is not None and choice is None
            s.add("accuracy", image, choice == item["answer"])
        elif kind in QUANTITATIVE:
            metres = None if prediction is None else parse_metres(prediction)
            unparsed += prediction is not None and metres is None
            truth = float(item["answer"])
            ratio = metres / truth if metres is not None and truth > 0 else None
            s.add("success_25", image, ratio is not None and 0.75 <= ratio <= 1.25)
            s.add("success_2x", image, ratio is not None and ratio > 0 and max(ratio, 1 / ratio) < 2)
            if metres is not None and truth > 0:
                s.add("abs_rel", image, abs(metres - truth) / truth)
        else:
            truth = truth_triplets(item)
            width, height = item["image_size"]
            predicted = [] if prediction is None else parse_triplets(prediction, width, height)
            unparsed += prediction is not None and not predicted
            hits = recalled(truth, predicted)
            for (axis, _, _), hit in zip(truth, hits):
                s.add("recall", image, hit)
                by_predicate[DIRECTIONS[axis][0].predicate].append(hit)
            if truth:
                s.add("per_image_mean_recall", image, float(np.mean(hits)))
    out = {"n": len(items)}
    for metric in s.values:
        value = s.mean(metric)
        out[metric] = None if value is None else round(value, 4)
    if kind == "scene_graph":
        out["triplets"] = sum(len(i["triplets"]) for i in items)
        out["mean_recall"] = round(float(np.mean([np.mean(v) for v in by_predicate.values()])), 4) if by_predicate else None
        out["recall_by_predicate"] = {p: round(float(np.mean(v)), 4) for p, v in sorted(by_predicate.items())}
    out["unparsed"], out["missing"] = unparsed, missing
    out["ci"] = {metric: s.interval(metric, rng) for metric in s.values}
    return out


def score_items(items, predictions, seed=0):
    """{"types": {type: scores}, "qualitative": overall accuracy} of benchmark items against {id: prediction}."""
    by_type = defaultdict(list)
    for item in items:
        by_type[item["type"]].append(item)
    types = {kind: _type_scores(group, predictions, seed) for kind, group in sorted(by_type.items(), key=lambda kv: TYPES.index(kv[0]))}
    out = {"types": types}
    qualitative = [(t["accuracy"], t["n"]) for kind, t in types.items() if "accuracy" in t]
    if qualitative:
        out["qualitative_accuracy"] = round(sum(a * n for a, n in qualitative) / sum(n for _, n in qualitative), 4)
    return out


def _check_item(item):
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise ValueError("no \"id\"")
    if item.get("type") not in TYPES:
        raise ValueError(f"unknown type {item.get('type')!r}; one of {', '.join(TYPES)}")
    if not isinstance(item.get("image"), str) or not item["image"]:
        raise ValueError("no \"image\"")
    if item["type"] in QUALITATIVE and not (isinstance(item.get("choices"), list) and item.get("answer") in item["choices"]):
        raise ValueError("its answer is not one of its choices")
    if item["type"] in QUANTITATIVE and not (isinstance(item.get("answer"), (int, float)) and item["answer"] > 0):
        raise ValueError("its answer is not a positive number of metres")
    if item["type"] == "scene_graph":
        truth_triplets(item)
        width, height = item["image_size"]
        if not (width > 0 and height > 0):
            raise ValueError("image_size is not two positive numbers")


def score(benchmark, predictions_file, output=None, by_depth_source=False, seed=0):
    """Score a predictions file against a benchmark; write S.json, print a table; returns the exit code."""
    tally = Tally("score")
    items, seen = [], set()
    for item in read_jsonl(benchmark, "benchmark", tally):
        try:
            _check_item(item)
            if item["id"] in seen:
                raise ValueError("the id is given twice")
            seen.add(item["id"])
            items.append(item)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            tally.fail(f"{benchmark}: item {printable(item.get('id'))}: {e}")
    if not items:
        raise UserError(f"{benchmark}: no usable item")
    predictions = {}
    for row in read_jsonl(predictions_file, "predictions file", tally):
        name = row.get("id")
        if name not in seen:
            tally.fail(f"{predictions_file}: prediction {printable(name)!s}: no benchmark item has this id")
        elif name in predictions:
            tally.fail(f"{predictions_file}: prediction {printable(name)}: given twice; the first is scored")
        elif not isinstance(row.get("prediction"), str):
            tally.fail(f"{predictions_file}: prediction {printable(name)}: \"prediction\" is not text")
        else:
            predictions[name] = row["prediction"]
    result = {"benchmark": str(benchmark), "predictions": str(predictions_file), "items": len(items),
              "predicted": len(predictions), **score_items(items, predictions, seed)}
    if by_depth_source:
        groups = defaultdict(list)
        for item in items:
            groups[str(item.get("depth_source"))].append(item)
        result["by_depth_source"] = {source: score_items(group, predictions, seed) for source, group in sorted(groups.items())}
    if output:
        write_json(output, result)
    print_table(result)
    tally.done = len(items)
    tally.summary(f"{len(predictions)} predictions" + (f", scores in {output}" if output else ""))
    return tally.exit_code


def print_table(result):
    print(f"{'type':<16}{'n':>6}  {'metric':<22}{'value':>8}  {'95% CI':<18}{'unparsed':>9}{'missing':>8}")
    for kind, t in result["types"].items():
        metrics = [m for m in ("accuracy", "success_25", "success_2x", "abs_rel", "recall", "mean_recall",
                               "per_image_mean_recall") if t.get(m) is not None]
        for k, metric in enumerate(metrics):
            ci = t["ci"].get(metric)
            shown = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
            first = k == 0
            print(f"{kind if first else '':<16}{t['n'] if first else '':>6}  {metric:<22}{t[metric]:>8.3f}  {shown:<18}"
                  f"{t['unparsed'] if first else '':>9}{t['missing'] if first else '':>8}")
    if "qualitative_accuracy" in result:
        print(f"{'qualitative':<16}{'':>6}  {'accuracy':<22}{result['qualitative_accuracy']:>8.3f}")


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--benchmark", required=True, help="benchmark.jsonl (python -m spacesgg.benchmark)")
    p.add_argument("--predictions", required=True, help="JSONL of {\"id\", \"prediction\"} (python -m spacesgg.ask)")
    p.add_argument("--output", default=None, help="where the scores go as JSON (S.json)")
    p.add_argument("--by-depth-source", action="store_true", help="also score each depth source (sensor, a depth model) apart")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default %(default)s)")
    return p


def main(args):
    return score(args.benchmark, args.predictions, args.output, args.by_depth_source, args.seed)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
