"""A static HTML inspector of an annotation file and the training records made from it (no server, no CDN, no script).

    python -m spacesgg.inspect --anno-file outputs/spacesgg/multiview.json --records outputs/spacesgg/layer.json outputs/spacesgg/between.json --output-dir outputs/spacesgg/inspect --image-root data/synthetic_scenes/images

Writes OUTPUT_DIR/index.html (counts, what failed, one row per image) and
OUTPUT_DIR/pages/{stem}.html per image: the image with every object's box
drawn in the colour of its depth layer, each view's layers and relations in
words ("left of, above"), and every record's conversation with its grounding
tags shown as highlighted object names and their boxes drawn, labelled, on the
image. Open index.html in any browser. Every text from the data is escaped
(Jinja2 autoescaping) and file names are URL-encoded; a photo with an EXIF
orientation is shown from a stored-frame copy (images/), as LLaVA's loader
reads it, since browsers rotate local files whatever the CSS says.
"""

import os
import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment
from markupsafe import Markup

from batchkit.batch import Tally, report
from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from batchkit.files import atomic_path, read_json, write_bytes
from spacesgg.annotations import image_stem, load_annotations, rewrite_path
from spacesgg.cli import add_path_rewrite_args
from spacesgg.io import image_header, stored_frame_png, warn_photo
from spacesgg.prompt_functions.base import relation_phrase
from spacesgg.tags import BOX_RE, PRED_RE, REF_RE, pixel_box

LAYER_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")
UNLAYERED = "#808080"
TAG_COLOUR = "#ffd700"
FALLBACK_SIZE = (640, 480)          # drawn when a record has no image_size (before stage 1.2)
STYLE = """body{font:14px sans-serif;margin:16px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}.scene{position:relative;display:inline-block}
.scene img{display:block}.box{position:absolute;border:3px solid;box-sizing:border-box}
.box span{position:absolute;top:-18px;left:-3px;font-size:12px;color:#000;padding:0 3px;white-space:nowrap}
.turn{margin:4px 0;white-space:pre-wrap}.human{color:#333}.gpt{color:#063}.bad{color:#b00}
mark.ref{background:#fff3a0;border-radius:3px;padding:0 2px}em.pred{color:#8a2be2;font-style:normal;font-weight:bold}
.none{color:#999}"""

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_env.filters["url"] = lambda path: "/".join(quote(part, safe="") for part in str(path).split("/"))

_SCENE = _env.from_string("""<div class="scene">
{% if src %}<img src="{{ src | url }}" width="{{ width }}" height="{{ height }}" alt="image">
{% else %}<div style="width:{{ width }}px;height:{{ height }}px;background:#eee">image not found</div>{% endif %}
{% for b in boxes %}<div class="box" style="left:{{ '%.1f' % b.x0 }}px;top:{{ '%.1f' % b.y0 }}px;width:{{ '%.1f' % (b.x1 - b.x0) }}px;height:{{ '%.1f' % (b.y1 - b.y0) }}px;border-color:{{ b.colour }}"><span style="background:{{ b.colour }}">{{ b.label }}</span></div>
{% endfor %}</div>""")

_PAGE = _env.from_string("""<!doctype html><html><head><meta charset="utf-8"><title>{{ stem }}</title>
<style>{{ style }}</style></head><body><p><a href="../index.html">index</a></p>
<h1>{{ stem }}</h1><p>{{ key }}</p>
{{ scene }}
<p>Boxes coloured by depth layer (L1 nearest); grey: not in any layer (rejected).</p>
{% for view in views %}
<details{% if loop.first %} open{% endif %}><summary><b>view {{ view.name }}</b>: layers near to far: {% for level in view.levels %}{{ level | join(", ") }}{% if not loop.last %} | {% endif %}{% endfor %}</summary>
<table><tr><th>object</th><th>is</th><th>object</th></tr>
{% for r in view.relations %}<tr><td>{{ r.a }}</td><td{% if not r.words %} class="none"{% endif %}>{{ r.words or "no clear order" }}</td><td>{{ r.b }}</td></tr>
{% endfor %}</table></details>
{% endfor %}
{% for rec in records %}
<h2>record {{ rec.id }} ({{ rec.prompt_function }})</h2>
{{ rec.scene }}
{% for turn in rec.turns %}<div class="turn {{ turn.role }}"><b>{{ turn.role }}:</b> {% for part in turn.parts %}{% if part.kind == "ref" %}<mark class="ref">{{ part.text }}</mark>{% elif part.kind == "pred" %}<em class="pred">{{ part.text }}</em>{% else %}{{ part.text }}{% endif %}{% endfor %}</div>
{% endfor %}
{% endfor %}
</body></html>""")

_INDEX = _env.from_string("""<!doctype html><html><head><meta charset="utf-8"><title>inspector</title>
<style>{{ style }}</style></head><body><h1>{{ title }}</h1><p>{{ images }} images, {{ summary }}</p>
{% if failed %}<h2 class="bad">pages that could not be made</h2><ul>{% for line in failed %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>image</th><th>objects</th><th>layers</th><th>rejected objects</th><th>views</th><th>records</th></tr>
{% for row in rows %}<tr><td><a href="pages/{{ row.page | url }}">{{ row.stem }}</a></td><td>{{ row.objects }}</td><td>{{ row.layers }}</td>
<td{% if row.rejected %} class="bad"{% endif %}>{{ row.rejected }}</td><td>{% if row.views %}yes{% else %}<span class="bad">no</span>{% endif %}</td><td>{{ row.records }}</td></tr>
{% endfor %}</table></body></html>""")


TAG_PARTS_RE = re.compile(f"(?P<ref>{REF_RE.pattern})|(?P<pred>{PRED_RE.pattern})|(?P<box>{BOX_RE.pattern})")


def _box(box, colour, label):
    x0, y0, x1, y1 = (float(v) for v in box)
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "colour": colour, "label": label}


def markup_parts(text):
    """A turn's text as parts: plain text, a <ref> tag as its label, a <pred> tag as its predicate (boxes dropped)."""
    parts, position = [], 0
    for m in TAG_PARTS_RE.finditer(text):
        if m.start() > position:
            parts.append({"kind": "text", "text": text[position:m.start()]})
        tag = m.group(0)
        if m.group("ref"):
            parts.append({"kind": "ref", "text": tag[len("<ref>"):tag.index("</ref>")]})
        elif m.group("pred"):
            parts.append({"kind": "pred", "text": tag[len("<pred>"):tag.index("</pred>")]})
        position = m.end()
    if position < len(text):
        parts.append({"kind": "text", "text": text[position:]})
    return parts


def tagged_boxes(turns, width, height):
    """Each object a conversation names with a <ref> tag: its pixel box, labelled with its name, once per box."""
    seen = {}
    for turn in turns:
        for m in REF_RE.finditer(str(turn.get("value", ""))):
            tag = m.group(0)
            nbox = tuple(int(v) for v in m.groups())
            seen.setdefault(nbox, tag[len("<ref>"):tag.index("</ref>")])
    return [_box(pixel_box(nbox, width, height), TAG_COLOUR, label) for nbox, label in seen.items()]


def _relations(data, objects):
    def name(oid):
        obj = objects.get(oid)
        return f"{oid} {obj.get('label', '')}" if isinstance(obj, dict) else str(oid)
    rows = []
    for pair, rel in (data.get("relations") or {}).items():
        a, _, b = str(pair).partition(">")
        if f"{b}>{a}" in data["relations"] and b < a:
            continue                                  # each pair once: b>a states the same as a>b, reversed
        words = relation_phrase(rel) if isinstance(rel, list) and len(rel) == 3 and any(rel) else ""
        rows.append({"a": name(a), "words": words, "b": name(b)})
    return rows


def page(key, record, records, image_src, stem=None):
    """The HTML page of one image."""
    size = record.get("image_size")
    width, height = size if isinstance(size, list) and len(size) == 2 else FALLBACK_SIZE
    objects = record.get("objects") if isinstance(record.get("objects"), dict) else {}
    level_of = {oid: k for k, level in enumerate(record.get("levels") or []) for oid in level}
    boxes = []
    for oid, obj in objects.items():
        if isinstance(obj, dict) and isinstance(obj.get("box"), list) and len(obj["box"]) == 4:
            k = level_of.get(oid)
            colour = LAYER_COLOURS[k % len(LAYER_COLOURS)] if k is not None else UNLAYERED
            boxes.append(_box(obj["box"], colour, f"{oid} {obj.get('label', '')}" + (f" L{k + 1}" if k is not None else "")))
    views = [{"name": name, "levels": data.get("levels") or [], "relations": _relations(data, objects)}
             for name, data in (record.get("views") or {}).items() if isinstance(data, dict)]
    recs = []
    for rec in records:
        turns = [t for t in rec.get("conversations", []) if isinstance(t, dict)]
        recs.append({"id": rec.get("id"), "prompt_function": rec.get("prompt_function", ""),
                     "scene": _SCENE.render(src=image_src, width=width, height=height,
                                            boxes=tagged_boxes(turns, width, height)),
                     "turns": [{"role": str(t.get("from")), "parts": markup_parts(str(t.get("value", "")))} for t in turns]})
    return _PAGE.render(stem=stem or image_stem(key), key=key, style=Markup(STYLE), views=views, records=[
        dict(r, scene=Markup(r["scene"])) for r in recs],
        scene=Markup(_SCENE.render(src=image_src, width=width, height=height, boxes=boxes)))


def _write(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _page_name(stem, used):
    """A page file name for a stem, unique among the pages (two images may share a stem in different folders)."""
    base = stem if stem not in ("", ".", "..") else "image"
    name, k = f"{base}.html", 1
    while name in used:
        k += 1
        name = f"{base}-{k}.html"
    used.add(name)
    return name


def inspect(anno_file, output_dir, record_files=(), image_root=None, dataset_base=None, data_prefix=None):
    """Write the inspector site; returns the exit code."""
    records = load_annotations(anno_file)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file")
    if image_root and not Path(image_root).is_dir():
        report(f"warning: --image-root {image_root} is not a folder; images are looked for at their annotation paths only")
        image_root = None
    by_image = {}
    for f in record_files:
        data = read_json(f, "records file")
        if not isinstance(data, list):
            raise UserError(f"{f}: expected a JSON list of LLaVA records")
        for rec in data:
            if isinstance(rec, dict):
                by_image.setdefault(Path(str(rec.get("image", ""))).name, []).append(rec)
    tally = Tally("inspect")
    counts, rows, failed, used = Counter(), [], [], set()
    for key, record in records.items():
        try:
            if not isinstance(record, dict):
                raise ValueError(f"record is a {type(record).__name__}, not an object")
            stem = image_stem(key)
            name = _page_name(stem, used)
            path = Path(rewrite_path(key, dataset_base, data_prefix))
            if not path.is_file() and image_root:
                path = Path(image_root) / path.name
            src = None
            if path.is_file():
                warn_photo(tally, path, image_header(path)[1])
                stored = stored_frame_png(path)
                if stored is not None:                      # browsers rotate local files: show the stored frame
                    copy = out / "images" / f"{Path(name).stem}.png"
                    write_bytes(copy, stored)
                    path = copy
                src = os.path.relpath(path.resolve(), (out / "pages").resolve())
            mine = by_image.get(Path(key).name, [])
            _write(out / "pages" / name, page(key, record, mine, src, stem))
            objects = record.get("objects") if isinstance(record.get("objects"), dict) else {}
            rejected = [o for o, obj in objects.items() if not (isinstance(obj, dict) and "depth" in obj)]
            counts["objects"] += len(objects)
            counts["rejected objects"] += len(rejected)
            counts["images without views"] += "views" not in record
            counts["records"] += len(mine)
            rows.append({"page": name, "stem": stem, "objects": len(objects), "layers": len(record.get("levels") or []),
                         "rejected": len(rejected), "views": "views" in record, "records": len(mine)})
            tally.done += 1
        except Exception as e:  # one bad record costs one page
            tally.fail_record(key, e)
            failed.append(f"{key}: {e}")
    _write(out / "index.html", _INDEX.render(style=Markup(STYLE), title=str(anno_file), images=len(records), failed=failed,
                                             summary=", ".join(f"{v} {k}" for k, v in counts.items()), rows=rows))
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
