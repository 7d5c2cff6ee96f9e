"""create_layer_prompt: one scene description per image, layer by layer from near to far."""

from pathlib import PurePosixPath

from batchkit.errors import RecordError

from .base import Request, join, object_tags, seeded_rng, views

QUESTIONS = (
    "Describe the scene layer by layer, from the nearest objects to the farthest.",
    "What is in this image, from near to far?",
    "Walk me through the depth layers of this scene, starting closest to the camera.",
    "Describe how the objects in this picture are arranged in depth.",
)


def build(key, record, box_norm="pad", seed=0, **_):
    tags = object_tags(key, record, box_norm)
    levels = [[o for o in level if o in tags] for level in views(key, record)["front"]["levels"]]
    levels = [level for level in levels if level]
    if not levels:
        raise RecordError(f"{key}: no object in any layer")
    lines = [f"Layer {k + 1}: " + ", ".join(tags[o][0] for o in level) for k, level in enumerate(levels)]
    caption = record.get("caption") if isinstance(record.get("caption"), str) else ""
    user = f"Caption: {caption}\nLayers from near to far:\n" + "\n".join(lines)
    rid = f"{PurePosixPath(key).stem}_layer"
    return [Request(rid, key, "create_layer_prompt", "layer_system.txt", user, seeded_rng(seed, rid).choice(QUESTIONS),
                    [tags[o][1] for level in levels for o in level],
                    {"levels": [[tags[o][0] for o in level] for level in levels]})]


def template(request, rng):
    levels = request.facts["levels"]
    starts = ["Closest to the camera", "In the foreground", "Nearest to the viewer"]
    middles = ["Behind that", "Further back", "A little farther away", "Next in depth"]
    ends = ["At the back", "Farthest away", "In the background"]
    parts = []
    for k, level in enumerate(levels):
        verb = "is" if len(level) == 1 else "are"
        lead = rng.choice(starts) if k == 0 else rng.choice(ends) if k == len(levels) - 1 else rng.choice(middles)
        parts.append(f"{lead} {verb} {join(level)}.")
    return " ".join(parts)


def validate(request, text):
    """A description must cite at least one object of the prompt with its tag."""
    if not any(tag in text for level in request.facts["levels"] for tag in level):
        return None, "reply cites no object of the prompt with its <ref>..</ref><box>..</box> tag"
    return [(request.question, text.strip())], None
