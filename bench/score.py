"""How long scoring takes: 100k benchmark items of every type and their predictions, scored in one process.

    python bench/score.py --items 100000

Items are made in memory from random geometry (two choices, metres, scene graphs of 4 triplets); predictions are
written the way VLMs answer (sentences with the choice, numbers with units, ASMv2 markup). Prints items per second
of score_items (parsing, metrics and 1000-sample bootstrap intervals). Not a test.
"""

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spacesgg.score import score_items  # noqa: E402
from spacesgg.tags import box_text, normalise_box, ref_tag  # noqa: E402

KINDS = [("left_right", ("left", "right")), ("above_below", ("above", "below")), ("front_behind", ("in front", "behind"))]


def make(n, seed=0):
    rng = random.Random(seed)
    items, predictions = [], {}
    for k in range(n):
        image = f"img_{k // 20}.png"
        pick = k % 5
        if pick < 3:
            kind, choices = KINDS[pick]
            answer = rng.choice(choices)
            items.append({"id": f"q{k}", "type": kind, "image": image, "image_size": [640, 480], "question": "?",
                          "choices": list(choices), "answer": answer,
                          "objects": {"A": {"label": "chair", "box": [0, 0, 9, 9]}, "B": {"label": "table", "box": [9, 9, 20, 20]}}})
            predictions[f"q{k}"] = f"The chair is {rng.choice(choices)} the table."
        elif pick == 3:
            truth = rng.uniform(0.5, 8)
            items.append({"id": f"q{k}", "type": "distance", "image": image, "image_size": [640, 480], "question": "?",
                          "answer": round(truth, 3), "objects": {}})
            predictions[f"q{k}"] = f"About {truth * rng.uniform(0.6, 1.6) * 100:.0f} cm apart."
        else:
            boxes = [[rng.uniform(0, 300), rng.uniform(0, 200), 0, 0] for _ in range(4)]
            for b in boxes:
                b[2], b[3] = b[0] + rng.uniform(20, 300), b[1] + rng.uniform(20, 250)
            triplets = [{"subject": {"label": f"o{a}", "box": boxes[a]}, "predicate": rng.choice(["left of", "above", "behind"]),
                         "object": {"label": f"o{a + 1}", "box": boxes[a + 1]}} for a in range(3)]
            items.append({"id": f"q{k}", "type": "scene_graph", "image": image, "image_size": [640, 480], "question": "?",
                          "triplets": triplets, "objects": {}})
            text = []
            for t in triplets:
                s, o = normalise_box(t["subject"]["box"], 640, 480), normalise_box(t["object"]["box"], 640, 480)
                text.append(f"{ref_tag(t['subject']['label'], s)} <pred>{t['predicate']}</pred>{box_text(s)}{box_text(o)} "
                            f"{ref_tag(t['object']['label'], o)}.")
            predictions[f"q{k}"] = " ".join(text)
    return items, predictions


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--items", type=int, default=100000, help="how many items to score (default %(default)s)")
    args = p.parse_args()
    items, predictions = make(args.items)
    start = time.perf_counter()
    result = score_items(items, predictions)
    seconds = time.perf_counter() - start
    print(f"scored {len(items)} items in {seconds:.1f} s ({len(items) / seconds:,.0f} items/s); "
          f"qualitative accuracy {result['qualitative_accuracy']:.3f}, scene-graph recall "
          f"{result['types']['scene_graph']['recall']:.3f}")


if __name__ == "__main__":
    main()
