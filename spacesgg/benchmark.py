"""A held-out spatial benchmark from the same geometry: a stable split of the images and questions about the val ones.

    python -m spacesgg.benchmark --anno-file outputs/spacesgg/multiview.json --output-dir outputs/benchmark --image-root data/synthetic_scenes/images

Writes OUTPUT_DIR/split.json {"train": [keys], "val": [keys]} (an image is in
val when a hash of its key and --seed falls below --val-fraction: the same on
every machine, whatever else the file holds) and OUTPUT_DIR/benchmark.jsonl,
one question a line, about the val images only (stage 2 and the exporters take
--split OUTPUT_DIR/split.json:train, so no val image enters training):
  left_right, above_below, front_behind   two choices; asked only where the front view's order is unambiguous
  distance, camera_distance, width, height the answer in metres (centres and extents of stage 1.3)
  scene_graph                              every unambiguous front-view relation as triplets
Objects are named by their label, and by their pixel box where the label
repeats in the image. --from-grid GRID_DIR instead asks left/right and
above/below about every grid image (positions from the file names), the
spatial-ID query word for word.
"""

import hashlib
import random
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path, PurePosixPath

from batchkit.batch import Tally, map_records, report
from batchkit.cli import make_parser, number, positive_int, run_cli
from batchkit.errors import RecordError, Skipped, UserError
from batchkit.files import check_input_dir, read_json, write_json, write_jsonl
from spacesgg.annotations import ImagePaths, check_label, load_annotations
from spacesgg.cli import add_path_rewrite_args
from spacesgg.llm_query import image_path
from spacesgg.prompt_functions.base import DIRECTIONS, direction
from spacesgg.tags import normalise_box, ref_tag

QUALITATIVE = {"left_right": (0, ("left", "right")), "above_below": (1, ("above", "below")),
               "front_behind": (2, ("in front", "behind"))}
QUANTITATIVE = ("distance", "camera_distance", "width", "height")
TYPES = (*QUALITATIVE, *QUANTITATIVE, "scene_graph")
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_MAX_PER_TYPE = 4
SIZE_AXES = {"width": 0, "height": 1}


def in_val(key, val_fraction, seed=0):
    """Whether an image key falls in val: a hash of seed and key, read as a fraction, below `val_fraction`."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8", "backslashreplace")).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < val_fraction


def split_keys(keys, val_fraction, seed=0):
    keys = list(keys)
    return {"train": [k for k in keys if not in_val(k, val_fraction, seed)],
            "val": [k for k in keys if in_val(k, val_fraction, seed)]}


def read_split(spec):
    """--split FILE:PART -> the set of that part's keys (and of their file names, for records that carry only those)."""
    path, _, part = str(spec).rpartition(":")
    if not path or part not in ("train", "val"):
        raise UserError(f"--split {spec!r}: write FILE:train or FILE:val (e.g. outputs/benchmark/split.json:train)")
    data = read_json(path, "split file")
    if not (isinstance(data, dict) and all(isinstance(data.get(p), list) for p in ("train", "val"))):
        raise UserError(f"{path}: not a split file ({{\"train\": [keys], \"val\": [keys]}}, from python -m spacesgg.benchmark)")
    return set(map(str, data[part]))


def _names(objects):
    """{id: how a question names it}: "the {label}", with its pixel box where the label repeats in the image."""
    counts = Counter(obj["label"].strip().lower() for obj in objects.values())
    out = {}
    for oid, obj in objects.items():
        label = obj["label"].strip()
        box = "[" + ", ".join(str(round(float(v))) for v in obj["box"]) + "]"
        out[oid] = f"the {label}" if counts[label.lower()] == 1 else f"the {label} at {box}"
    return out


def _qualitative(kind, a, b, rel, names):
    axis, choices = QUALITATIVE[kind]
    A, B = names[a], names[b]
    question = {"left_right": f"Is {A} to the left or to the right of {B}?",
                "above_below": f"Is {A} above or below {B}?",
                "front_behind": f"Is {A} in front of or behind {B}, seen from the camera?"}[kind]
    return question, list(choices), choices[0 if rel[axis] < 0 else 1]


def image_items(key, record, image, max_per_type=DEFAULT_MAX_PER_TYPE, seed=0, types=TYPES, box_norm="pad"):
    """The benchmark items of one stage-1.3 record (its val image)."""
    if not isinstance(record, dict):
        raise RecordError(f"{key}: record is a {type(record).__name__}, expected an object")
    front = (record.get("views") or {}).get("front")
    if not isinstance(front, dict):
        raise Skipped(f"{key}: no views (stage 1.3 left it out); nothing to ask")
    width, height = record["image_size"]
    objects = {oid: obj for oid, obj in (record.get("objects") or {}).items()
               if isinstance(obj, dict) and isinstance(obj.get("centre"), list) and isinstance(obj.get("extent"), list)}
    for oid, obj in objects.items():
        check_label(key, oid, obj.get("label"))
    names = _names(objects)
    stem = PurePosixPath(key).stem
    rng = random.Random(f"{seed}:{key}")
    base = {"image": image, "image_size": [width, height], "source": {"key": key, "view": "front"},
            "depth_source": record.get("depth_source", "sensor")}

    def obj(oid):
        return {"label": objects[oid]["label"].strip(), "box": [float(v) for v in objects[oid]["box"]]}

    items, pairs = [], [(a, b) for a, b in combinations(sorted(objects), 2) if f"{a}>{b}" in front.get("relations", {})]
    for kind in types:
        found = []
        if kind in QUALITATIVE:
            axis = QUALITATIVE[kind][0]
            for a, b in pairs:
                if front["relations"][f"{a}>{b}"][axis]:
                    a, b = (a, b) if rng.random() < 0.5 else (b, a)       # either may be asked about
                    question, choices, answer = _qualitative(kind, a, b, front["relations"][f"{a}>{b}"], names)
                    found.append({"question": question, "choices": choices, "answer": answer,
                                  "objects": {"A": obj(a), "B": obj(b)}})
        elif kind == "distance":
            for a, b in combinations(sorted(objects), 2):
                metres = sum((p - q) ** 2 for p, q in zip(objects[a]["centre"], objects[b]["centre"])) ** 0.5
                found.append({"question": f"How far apart are {names[a]} and {names[b]}, in metres?",
                              "answer": round(metres, 3), "objects": {"A": obj(a), "B": obj(b)}})
        elif kind == "camera_distance":
            for a in sorted(objects):
                metres = sum(v * v for v in objects[a]["centre"]) ** 0.5
                found.append({"question": f"How far is {names[a]} from the camera, in metres?",
                              "answer": round(metres, 3), "objects": {"A": obj(a)}})
        elif kind in SIZE_AXES:
            for a in sorted(objects):
                word = {"width": "wide", "height": "tall"}[kind]
                found.append({"question": f"How {word} is {names[a]}, in metres?",
                              "answer": round(float(objects[a]["extent"][SIZE_AXES[kind]]), 3), "objects": {"A": obj(a)}})
        elif kind == "scene_graph":
            found = _scene_graph(pairs, front, objects, width, height, box_norm, obj)
        if kind != "scene_graph" and len(found) > max_per_type:
            found = [found[k] for k in sorted(rng.sample(range(len(found)), max_per_type))]
        for k, item in enumerate(found):
            items.append({"id": f"{stem}_{kind}_{k}", **base, "type": kind, **item})
    return items


def _scene_graph(pairs, front, objects, width, height, box_norm, obj):
    triplets = []
    for a, b in pairs:
        for axis, r in enumerate(front["relations"][f"{a}>{b}"]):
            if r:
                triplets.append({"subject": obj(a), "predicate": direction(axis, r).predicate, "object": obj(b)})
    if not triplets:
        return []
    tags = ", ".join(ref_tag(objects[o]["label"].strip(), normalise_box(objects[o]["box"], width, height, box_norm))
                     for o in sorted(objects))
    predicates = ", ".join(d.predicate for pair in DIRECTIONS for d in pair)
    question = (f"Objects: {tags}. Describe the spatial relations between these objects, seen from the camera, as a "
                "scene graph: one sentence per relation, <ref>subject</ref><box>[[x1, y1, x2, y2]]</box> "
                "<pred>predicate</pred><box>[[subject box]]</box><box>[[object box]]</box> "
                f"<ref>object</ref><box>[[x1, y1, x2, y2]]</box>, with the boxes given. Predicates: {predicates}.")
    return [{"question": question, "triplets": triplets, "objects": {o: obj(o) for o in sorted(objects)}}]


def grid_items(grid_dir, image_root=None):
    """Left/right and above/below items about every image of a grid dataset (the spatial-ID query, positions from
    the file names; asked only where the target's column, or row, differs from the reference's)."""
    from spatial_id.ids import pair_folders, read_pair
    from spatial_id.intervention import DIRECTIONS as QUERIES
    root = Path(image_root or grid_dir).resolve()
    items = []
    for folder in pair_folders(grid_dir):
        a, b, entries = read_pair(folder)
        manifest = read_json(Path(folder) / "manifest.json", "manifest")
        canvas = manifest["grid"] * manifest["cell"]
        refs = {e["file"]: e["reference"] for e in manifest["images"]}
        targets = {e["file"]: e["target"] for e in manifest["images"]}
        for path, _cell in entries:
            name = str(Path(path).relative_to(folder))
            ref, target = refs[name], targets[name]
            for kind, query in (("left_right", QUERIES["horizontal"]), ("above_below", QUERIES["vertical"])):
                axis = query["axis"]
                if target["cell"][axis] == ref["cell"][axis]:
                    continue
                answer = query["answers"][int(target["cell"][axis] > ref["cell"][axis])]
                items.append({"id": f"{Path(name).with_suffix('').as_posix().replace('/', '_')}_{kind}", "image": Path(path).resolve().relative_to(root).as_posix(),
                              "image_size": [canvas, canvas], "type": kind,
                              "question": query["query"].format(a=a, b=b), "choices": list(query["answers"]),
                              "answer": answer, "objects": {"A": {"label": a, "box": ref["box"]},
                                                            "B": {"label": b, "box": target["box"]}},
                              "source": {"key": str(path), "view": "grid"}, "depth_source": None})
    return items


def make_benchmark(output_dir, anno_file=None, grid_dir=None, image_root=None, val_fraction=DEFAULT_VAL_FRACTION,
                   seed=0, max_per_type=DEFAULT_MAX_PER_TYPE, types=TYPES, images=None):
    """split.json and benchmark.jsonl (or, from a grid, benchmark.jsonl only); returns the exit code."""
    out = Path(output_dir)
    if bool(anno_file) == bool(grid_dir):
        raise UserError("give what to ask about: --anno-file (a stage-1.3 annotation file) or --from-grid GRID_DIR")
    if not 0 <= val_fraction <= 1:
        raise UserError(f"--val-fraction {val_fraction}: give a fraction between 0 and 1")
    check_input_dir(image_root, "--image-root")
    tally = Tally("benchmark")
    if grid_dir:
        check_input_dir(grid_dir, "--from-grid")
        items = grid_items(grid_dir, image_root)
        tally.done = len(items)
    else:
        records = load_annotations(anno_file)
        split = split_keys(records, val_fraction, seed)
        write_json(out / "split.json", split)
        if not split["val"]:
            report(f"warning: no image of {len(records)} fell in val at --val-fraction {val_fraction:g}; raise it")
        images = images or ImagePaths(dataset=Path(image_root).parent if image_root else None)
        per_image = {}

        def one(key, record):
            image = image_path(key, images.dataset_base, images.data_prefix, image_root)
            per_image[key] = image_items(key, record, image, max_per_type, seed, types)
            return record
        map_records({k: records[k] for k in split["val"]}, one, tally, "benchmark")
        items = [item for key in split["val"] for item in per_image.get(key, [])]
    if not items:
        raise UserError("no question could be made (no val image with an unambiguous relation); raise --val-fraction")
    write_jsonl(out / "benchmark.jsonl", items)
    counts = Counter(item["type"] for item in items)
    tally.summary(f"{len(items)} questions (" + ", ".join(f"{n} {t}" for t, n in counts.items()) + f") in {out}")
    return tally.exit_code


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--anno-file", default=None, help="stage-1.3 annotation file (multiview_layers.py's output)")
    p.add_argument("--from-grid", default=None, help="instead: a grid dataset folder (pair folders with manifests)")
    p.add_argument("--output-dir", required=True, help="where split.json and benchmark.jsonl go")
    p.add_argument("--image-root", default=None, help="images are written relative to this folder (LLaVA's --image_folder; "
                                                      "default: the annotation keys, or the grid folder)")
    p.add_argument("--val-fraction", type=number(float, 0, 1), default=DEFAULT_VAL_FRACTION,
                   help="share of the images held out for the benchmark (default %(default)g)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of which questions are asked (default %(default)s)")
    p.add_argument("--max-per-type", type=positive_int, default=DEFAULT_MAX_PER_TYPE,
                   help="questions of each type per image at most, a seeded sample (default %(default)s)")
    p.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES), help="which question types (default: all)")
    add_path_rewrite_args(p)
    return p


def main(args):
    images = ImagePaths.from_args(args, Path(args.image_root).parent if args.image_root else None)
    return make_benchmark(args.output_dir, args.anno_file, args.from_grid, args.image_root, args.val_fraction, args.seed,
                          args.max_per_type, args.types, images)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
