"""All-Seeing v2 grounding tags: <ref>label</ref><box>[[x1, y1, x2, y2]]</box> and <pred>p</pred><box>..</box><box>..</box>.

Boxes are integers 0..999. By default the image is first padded to a square
(centred, as LLaVA-1.5's expand2square and All-Seeing v2 do, with the
whole-pixel offset pad = (max(W, H) - W) // 2, likewise for H), so a box keeps
its aspect ratio: v' = (v + pad) / max(W, H) * 999. `stretch` normalises x by
W and y by H instead.
"""

import re

BOX_NORMS = ("pad", "stretch")
TAG_NAMES = ("ref", "box", "pred")
_NUM = r"\s*(\d{1,3})\s*"
BOX_RE = re.compile(rf"<box>\[\[{_NUM},{_NUM},{_NUM},{_NUM}\]\]</box>")
REF_RE = re.compile(rf"<ref>[^<>]+</ref>{BOX_RE.pattern}")
PRED_RE = re.compile(rf"<pred>[^<>]+</pred>{BOX_RE.pattern}{BOX_RE.pattern}")
ANY_TAG_RE = re.compile(r"</?(?:ref|box|pred)>")


def normalise_box(box, width, height, mode="pad"):
    """Pixel box [x0, y0, x1, y1] -> (x1, y1, x2, y2) integers in 0..999."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if mode == "pad":
        side = max(width, height)
        ox, oy = (side - width) // 2, (side - height) // 2       # expand2square's paste offset
        xs, ys = ((x0 + ox) / side, (x1 + ox) / side), ((y0 + oy) / side, (y1 + oy) / side)
    elif mode == "stretch":
        xs, ys = (x0 / width, x1 / width), (y0 / height, y1 / height)
    else:
        raise ValueError(f"box normalisation {mode!r} is not one of {BOX_NORMS}")
    clip = lambda v: min(999, max(0, int(round(v * 999))))  # noqa: E731
    return (clip(xs[0]), clip(ys[0]), clip(xs[1]), clip(ys[1]))


def pixel_box(nbox, width, height, mode="pad"):
    """A 0..999 box of the tags back to image pixels (the inverse of normalise_box, to its rounding)."""
    x1, y1, x2, y2 = (v / 999 for v in nbox)
    if mode == "stretch":
        return [x1 * width, y1 * height, x2 * width, y2 * height]
    side = max(width, height)
    ox, oy = (side - width) // 2, (side - height) // 2       # the same whole-pixel offset as expand2square
    return [x1 * side - ox, y1 * side - oy, x2 * side - ox, y2 * side - oy]


def box_text(nbox):
    return "<box>[[{}, {}, {}, {}]]</box>".format(*nbox)


def ref_tag(label, nbox):
    return f"<ref>{label}</ref>{box_text(nbox)}"


def pred_tag(predicate, subject_box, object_box):
    return f"<pred>{predicate}</pred>{box_text(subject_box)}{box_text(object_box)}"


def boxes_in(text):
    return [tuple(int(v) for v in m) for m in BOX_RE.findall(text)]


def check_tags(text, allowed_boxes):
    """None if every tag is well formed and every box is one of `allowed_boxes`, else the reason."""
    if not text or not text.strip():
        return "empty reply"
    allowed = {tuple(b) for b in allowed_boxes}
    for box in boxes_in(text):
        if box not in allowed:
            return f"box [[{', '.join(map(str, box))}]] is not one the prompt gave"
    rest = PRED_RE.sub("", REF_RE.sub("", text))
    stray = ANY_TAG_RE.search(rest)
    if stray:
        start = max(0, stray.start() - 20)
        return f"malformed tag near {rest[start:stray.end() + 20]!r}"
    return None
