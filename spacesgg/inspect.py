"""A static HTML inspector of an annotation file and the training records made from it (no server, no CDN).

    python -m spacesgg.inspect --anno-file outputs/spacesgg/multiview.json --records outputs/spacesgg/layer.json outputs/spacesgg/between.json --output-dir outputs/spacesgg/inspect --image-root data/synthetic_scenes/images

Writes OUTPUT_DIR/index.html (counts, what failed, one row per image) and
OUTPUT_DIR/pages/{stem}.html per image: the image with every object's box
drawn in the colour of its depth layer, each view's layers and relations as
tables, and every record's conversation with the boxes its tags name drawn on
the image. Open index.html in any browser.
"""

import html
import os
import sys
from collections import Counter
from pathlib import Path

from batchkit.batch import Tally
from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from batchkit.files import atomic_path, read_json
from spacesgg.annotations import image_stem, load_annotations, rewrite_path
from spacesgg.cli import add_path_rewrite_args
from spacesgg.tags import BOX_RE

LAYER_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")
UNLAYERED = "#808080"
STYLE = """body{font:14px sans-serif;margin:16px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}.scene{position:relative;display:inline-block}
.scene img{display:block}.box{position:absolute;border:3px solid;box-sizing:border-box}
.box span{position:absolute;top:-18px;left:-3px;font-size:12px;color:#fff;padding:0 3px;white-space:nowrap}
.turn{margin:4px 0;white-space:pre-wrap}.human{color:#333}.gpt{color:#063}.bad{color:#b00}"""


def pixel_box(nbox, width, height, mode="pad"):
    """A 0..999 box of the tags back to image pixels (the inverse of tags.normalise_box)."""
    x1, y1, x2, y2 = (v / 999 for v in nbox)
    if mode == "stretch":
        return [x1 * width, y1 * height, x2 * width, y2 * height]
    side = max(width, height)
    ox, oy = (side - width) // 2, (side - height) // 2
    return [x1 * side - ox, y1 * side - oy, x2 * side - ox, y2 * side - oy]


def _box_div(box, colour, label):
    x0, y0, x1, y1 = box
    return (f'<div class="box" style="left:{x0:.1f}px;top:{y0:.1f}px;width:{x1 - x0:.1f}px;height:{y1 - y0:.1f}px;'
            f'border-color:{colour}"><span style="background:{colour}">{html.escape(label)}</span></div>')


def _scene(image_src, width, height, boxes):
    img = f'<img src="{html.escape(image_src)}" width="{width}" height="{height}" alt="image">' if image_src else \
        f'<div style="width:{width}px;height:{height}px;background:#eee">image not found</div>'
    return f'<div class="scene">{img}{"".join(boxes)}</div>'


def page(key, record, records, image_src):
    """The HTML page of one image."""
    width, height = record.get("image_size") or (640, 480)
    level_of = {oid: k for k, level in enumerate(record.get("levels") or []) for oid in level}
    boxes = []
    for oid, obj in (record.get("objects") or {}).items():
        if isinstance(obj, dict) and isinstance(obj.get("box"), list) and len(obj["box"]) == 4:
            k = level_of.get(oid)
            colour = LAYER_COLOURS[k % len(LAYER_COLOURS)] if k is not None else UNLAYERED
            boxes.append(_box_div(obj["box"], colour, f"{oid} {obj.get('label', '')}" + (f" L{k + 1}" if k is not None else "")))
    parts = [f"<h1>{html.escape(image_stem(key))}</h1><p>{html.escape(key)}</p>", _scene(image_src, width, height, boxes)]
    parts.append("<p>Boxes coloured by depth layer (L1 nearest); grey: not in any layer (rejected).</p>")
    for view, data in (record.get("views") or {}).items():
        rows = "".join(f"<tr><td>{html.escape(pair)}</td><td>{rel[0]:+d}</td><td>{rel[1]:+d}</td><td>{rel[2]:+d}</td></tr>"
                       for pair, rel in data.get("relations", {}).items())
        levels = " | ".join(", ".join(map(html.escape, level)) for level in data.get("levels", []))
        parts.append(f"<h2>view {html.escape(view)}</h2><p>layers near to far: {levels}</p>"
                     f"<table><tr><th>a&gt;b</th><th>left/right</th><th>above/below</th><th>front/behind</th></tr>{rows}</table>")
    for rec in records:
        tagged = []
        for turn in rec["conversations"]:
            for m in BOX_RE.finditer(turn["value"]):
                tagged.append(pixel_box([int(v) for v in m.groups()], width, height))
        drawn = [_box_div(b, "#ff0", "") for b in tagged]
        turns = "".join(f'<div class="turn {t["from"]}"><b>{t["from"]}:</b> {html.escape(t["value"])}</div>'
                        for t in rec["conversations"])
        parts.append(f'<h2>record {html.escape(rec["id"])} ({html.escape(rec.get("prompt_function", ""))})</h2>'
                     f'{_scene(image_src, width, height, drawn)}{turns}')
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(image_stem(key))}</title>" \
           f"<style>{STYLE}</style></head><body><p><a href='../index.html'>index</a></p>{''.join(parts)}</body></html>"


def _write(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def inspect(anno_file, output_dir, record_files=(), image_root=None, dataset_base=None, data_prefix=None):
    """Write the inspector site; returns the exit code."""
    records = load_annotations(anno_file)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file")
    by_image = {}
    for f in record_files:
        data = read_json(f, "records file")
        if not isinstance(data, list):
            raise UserError(f"{f}: expected a JSON list of LLaVA records")
        for rec in data:
            by_image.setdefault(Path(str(rec.get("image", ""))).name, []).append(rec)
    tally = Tally("inspect")
    counts = Counter()
    rows = []
    for key, record in records.items():
        try:
            stem = image_stem(key)
            path = Path(rewrite_path(key, dataset_base, data_prefix))
            if not path.is_file() and image_root:
                path = Path(image_root) / path.name
            src = os.path.relpath(path.resolve(), (out / "pages").resolve()) if path.is_file() else None
            mine = by_image.get(Path(key).name, [])
            _write(out / "pages" / f"{stem}.html", page(key, record, mine, src))
            objects = record.get("objects") or {}
            rejected = [o for o, obj in objects.items() if not (isinstance(obj, dict) and "depth" in obj)]
            counts["objects"] += len(objects)
            counts["rejected objects"] += len(rejected)
            counts["images without views"] += "views" not in record
            counts["records"] += len(mine)
            rows.append(f"<tr><td><a href='pages/{html.escape(stem)}.html'>{html.escape(stem)}</a></td><td>{len(objects)}</td>"
                        f"<td>{len(record.get('levels') or [])}</td><td class='{'bad' if rejected else ''}'>{len(rejected)}</td>"
                        f"<td>{'yes' if 'views' in record else '<span class=bad>no</span>'}</td><td>{len(mine)}</td></tr>")
            tally.done += 1
        except Exception as e:  # one bad record costs one page
            tally.fail_record(key, e)
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    index = (f"<!doctype html><html><head><meta charset='utf-8'><title>inspector</title><style>{STYLE}</style></head><body>"
             f"<h1>{html.escape(str(anno_file))}</h1><p>{len(records)} images, {html.escape(summary)}</p>"
             "<table><tr><th>image</th><th>objects</th><th>layers</th><th>rejected objects</th><th>views</th><th>records</th></tr>"
             f"{''.join(rows)}</table></body></html>")
    _write(out / "index.html", index)
    tally.summary(f"site in {out / 'index.html'}")
    return tally.exit_code


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--anno-file", required=True, help="annotation JSON (stage 1.3's output shows everything)")
    p.add_argument("--records", nargs="*", default=[], help="LLaVA record files of stage 2 to show per image")
    p.add_argument("--output-dir", required=True, help="where index.html and pages/ go")
    p.add_argument("--image-root", default=None, help="folder to find the images by file name when their keys do not exist here")
    add_path_rewrite_args(p)
    return p


def main(args):
    return inspect(args.anno_file, args.output_dir, args.records, args.image_root, args.dataset_base, args.data_prefix)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
