"""Spatial IDs from grid images: per-pair IDs, universal IDs, x/y axes, and their .pt files.

ID file: {"meta": {model, model_path, query, target, subtokens, dtype, pairs}, "layers": [...],
          "cells": [[i, j, size], ...], "ids": {word: float32 Tensor[L, C, D]}}
Axis file: {"meta", "layers", "axis": {word: float32 Tensor[L, D]}}
Text file: {"meta", "layers", "embeds": {word: float32 Tensor[L, D]}}
query/target/subtokens are dicts keyed by the ID word. Every file holds only
tensors, dicts, lists and strings, and loads with torch.load(weights_only=True).
"""

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from batchkit.batch import Tally
from batchkit.errors import UserError
from batchkit.files import atomic_path
from batchkit.shards import in_shard

from .extract import QUERY

AXIS_SIZE = 224
UNIVERSAL = "universal"


def save_pt(path, obj):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_pt(path, what="ID file"):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure is a bad file for the user
        raise UserError(f"{path}: not a readable {what} ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None


def pair_folders(image_dir):
    """The pair folders under `image_dir` (itself, if it is one), in name order."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: image folder not found; make it with dataengine/grid_data.sh")
    if (image_dir / "manifest.json").is_file():
        return [image_dir]
    pairs = sorted(p for p in image_dir.iterdir() if (p / "manifest.json").is_file())
    if not pairs:
        raise UserError(f"{image_dir}: no pair folder (a folder with manifest.json) here; make them with "
                        "dataengine/grid_data.sh or point at the right folder")
    return pairs


def read_pair(folder):
    """(a, b, [(image path, [i, j, size]), ...]) of a pair folder, checked against its manifest."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        a, b = manifest["pair"]
        entries = [(folder / e["file"], [*e["target"]["cell"], e["size"]]) for e in manifest["images"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{folder}/manifest.json: unreadable or not a grid manifest ({e}); regenerate the pair") from None
    if not entries:
        raise UserError(f"{folder}: the manifest lists no images")
    missing = [p.name for p, _ in entries if not p.is_file()]
    if missing:
        raise UserError(f"{folder}: {len(missing)} images of the manifest are missing (e.g. {missing[0]}); rerun the data engine")
    listed = {p.name for p, _ in entries}
    stray = sorted(p.name for p in folder.glob("*.png") if p.name not in listed)
    if stray:
        raise UserError(f"{folder}: holds images that are not in its manifest (e.g. {stray[0]}); a pair folder must "
                        "hold one configuration only")
    if folder.name != f"{a}_{b}":
        raise UserError(f"{folder}: the manifest is for pair {a}_{b}; folder and manifest disagree")
    return a, b, entries


ALL_LAYERS = "all"


def pair_digest(folder):
    """What a pair folder's images are: the digest of its manifest (configuration, render digests, every image)."""
    return hashlib.sha1((Path(folder) / "manifest.json").read_bytes()).hexdigest()[:16]


def images_of(folders):
    """{pair name: manifest digest} of pair folders, recorded in an ID file's meta."""
    return {Path(f).name: pair_digest(f) for f in folders}


def queries_of(folders, template=QUERY):
    """{target word: query} of pair folders, as the extraction asks them."""
    out = {}
    for f in folders:
        a, b = Path(f).name.split("_", 1)
        out[b] = template.format(a=a, b=b)
    return out


def made_with(path, source, dtype, layers, folders, queries=None, template=QUERY):
    """Whether the ID file `path` exists and was made from this snapshot, dtype, query, layers and pair images.

    `layers`: the exact hidden-state indices, ALL_LAYERS (every one, when the model's depth is not known
    yet), or None (not known without the model: never a match). `folders`: the pair folders it must come
    from; `queries`: {word: query} it must hold (default: each pair's target word and query).
    Reads the meta only (the tensors stay mapped).
    """
    if not path.is_file():
        return False
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        meta, made = data["meta"], list(data["layers"])
    except Exception:  # an unreadable file is redone, not trusted
        return False
    if meta.get("model_path") != source or meta.get("dtype") != dtype or layers is None:
        return False
    if meta.get("pairs") != [Path(f).name for f in folders] or meta.get("images") != images_of(folders):
        return False
    if meta.get("query") != (queries_of(folders, template) if queries is None else queries):
        return False
    if layers == ALL_LAYERS:
        return meta.get("layers_requested") == ALL_LAYERS and made == list(range(len(made)))
    return made == list(layers)


def pending_pairs(image_dir, output_dir, name, source, dtype, layers, template=QUERY, shard=None):
    """Pair folders whose OUTPUT_DIR/{a}_{b}/{name}.pt is missing or was made with other settings (see made_with)."""
    return [f for f in pair_folders(image_dir) if in_shard(f.name, shard) and not made_with(Path(output_dir) / f.name / f"{name}.pt", source, dtype,
                                                                   layers, [f], template=template)]


def reference_cells(folder):
    """Each manifest image's reference cell as a tuple in the reference-balanced design, else None (random design)."""
    manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("references") != "all":
        return [None] * len(manifest["images"])
    return [tuple(e["reference"]["cell"]) for e in manifest["images"]]


def extract_pair(extractor, folder, layers=None, batch_size=8, query_template=QUERY):
    """The pair's spatial IDs: (float32 Tensor[L, C, D], cells, layer indices, meta), centred as pair_ids says."""
    folder = Path(folder)
    a, b, entries = read_pair(folder)
    refs = reference_cells(folder)
    query = query_template.format(a=a, b=b)
    text = extractor.prompt(query, with_image=True)
    target = extractor.target_position(text, query, b)
    layer_ids = extractor.resolve_layers(layers, with_image=True)
    chunks = []
    for start in tqdm(range(0, len(entries), batch_size), desc=f"{folder.name}", unit="batch", leave=False):
        images = []
        for path, _ in entries[start:start + batch_size]:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        chunks.append(extractor.hidden([text] * len(images), images, target, layer_ids))
    ids, cells = pair_ids(torch.cat(chunks, dim=1), [cell for _, cell in entries], refs)
    meta = {"query": query, "target": b, "subtokens": target.subtokens, "pair": f"{a}_{b}",
            "design": "random" if refs[0] is None else "references=all"}
    return ids, cells, layer_ids, meta


def centre(vectors):
    """Subtract the mean over all images (dim 1) of a pair: the pair's spatial IDs."""
    return vectors - vectors.mean(dim=1, keepdim=True)


def pair_ids(vectors, cells, refs):
    """A pair's IDs from its raw vectors Tensor[L, N, D] ((i, j, size) and reference cell per image).

    Random design (refs all None): centred over all the pair's images. Reference-balanced design: centred within
    each reference position (over that folder's images), then, per (i, j, size), averaged over the reference
    positions, which removes where the reference stood. Returns (Tensor[L, C, D], cells in first-seen order).
    """
    if all(r is None for r in refs):
        return centre(vectors), cells
    centred = torch.empty_like(vectors)
    for ref in dict.fromkeys(refs):
        rows = [k for k, r in enumerate(refs) if r == ref]
        centred[:, rows] = centre(vectors[:, rows])
    order = list(dict.fromkeys(tuple(c) for c in cells))
    ids = torch.stack([centred[:, [k for k, c in enumerate(cells) if tuple(c) == cell]].mean(dim=1) for cell in order],
                      dim=1)
    return ids, [list(c) for c in order]


def file_meta(extractor, folders, query, target, subtokens, layers, design="random"):
    """An ID file's meta; `design` says how its pairs' images were made (random or references=all); `layers` is
    what --layers asked for (None: all), so that a file of some layers is never reused for all of them."""
    return {"model": extractor.choice.name, "model_path": extractor.choice.source, "query": query, "target": target,
            "subtokens": subtokens, "dtype": extractor.dtype_name, "pairs": [Path(f).name for f in folders],
            "images": images_of(folders), "design": design, "layers_requested": ALL_LAYERS if layers is None else "listed"}


def compute_ids(extractor, image_dir, output_dir, layers=None, batch_size=8, per_pair=False, query_template=QUERY,
                shard=None):
    """Pair IDs of every pair folder; one file with all words + universal, or one file per pair (resumable).

    Per pair, any failure costs that pair (one error line, exit 1 at the end); in one file, a failed pair
    stops the run, since the file would silently lack it.
    """
    pairs = [f for f in pair_folders(image_dir) if in_shard(f.name, shard)]     # --shard: with --per-pair only
    out = Path(output_dir)
    name = extractor.choice.name
    tally = Tally(f"compute_id {name}")
    ids, words, cells_all, layer_ids, metas = {}, {}, None, None, []
    wanted = extractor.resolve_layers(layers, with_image=True)
    for folder in tqdm(pairs, desc=f"{name} pairs", unit="pair"):
        done_file = out / folder.name / f"{name}.pt"
        if per_pair and made_with(done_file, extractor.choice.source, extractor.dtype_name, wanted, [folder],
                                  template=query_template):
            tally.skipped += 1
            continue
        if per_pair and done_file.is_file():
            tqdm.write(f"{done_file}: made with another snapshot, dtype, query, layers or images; extracting it again")
        try:
            vectors, cells, layer_ids, meta = extract_pair(extractor, folder, layers, batch_size, query_template)
        except Exception as e:  # one bad pair costs one pair
            if not per_pair:
                raise
            tally.fail_record(f"pair {folder.name}", e)
            continue
        word = meta["target"]
        if per_pair:
            save_pt(done_file, {
                "meta": file_meta(extractor, [folder], {word: meta["query"]}, {word: word}, {word: meta["subtokens"]},
                                  layers, meta["design"]),
                "layers": layer_ids, "cells": cells, "ids": {word: vectors}})
        else:
            if word in ids:
                raise UserError(f"{folder}: target word {word!r} appears in two pairs ({words[word]}, {meta['pair']}); "
                                "use --per-pair and average_id.py for such sets")
            if cells_all is not None and cells != cells_all:
                raise UserError(f"{folder}: its cells differ from the first pair's; all pairs need the same grid and sizes")
            cells_all = cells
            ids[word], words[word] = vectors, meta["pair"]
            metas.append(meta)
        tally.done += 1
    if not per_pair:
        ids[UNIVERSAL] = torch.stack(list(ids.values())).mean(dim=0)
        meta = file_meta(extractor, pairs, {m["target"]: m["query"] for m in metas},
                         {m["target"]: m["target"] for m in metas}, {m["target"]: m["subtokens"] for m in metas},
                         layers, "+".join(sorted({m["design"] for m in metas})))
        save_pt(out / f"{name}.pt", {"meta": meta, "layers": layer_ids, "cells": cells_all, "ids": ids})
    tally.summary(f"output in {out}")
    return tally.exit_code


AGREE = ("model_path", "dtype")           # meta fields every averaged pair file must share


def average_ids(files, output_file):
    """Universal IDs: the mean over pair files of their word's IDs, and each word's mean over the files holding it.

    Every file must agree on model path, dtype, layers and cells; the first one that does not is refused.
    """
    if not files:
        raise UserError("no pair ID files to average; run compute_id.py --per-pair first")
    first, sums, counts, pairs, images, total = None, {}, {}, [], {}, None
    for f in tqdm(files, desc="average", unit="file"):
        data = load_pt(f)
        if first is None:
            first = data
        else:
            for field in AGREE:
                if data["meta"].get(field) != first["meta"].get(field):
                    raise UserError(f"{f}: {field} {data['meta'].get(field)!r} differs from {files[0]}'s "
                                    f"{first['meta'].get(field)!r}; average files of one extraction only")
            for field in ("layers", "cells"):
                if data[field] != first[field]:
                    raise UserError(f"{f}: {field} differ from {files[0]}'s; extract all pairs with the same settings")
        for word, tensor in data["ids"].items():
            if word == UNIVERSAL:
                continue
            sums[word] = tensor.clone() if word not in sums else sums[word] + tensor
            counts[word] = counts.get(word, 0) + 1
            total = tensor.clone() if total is None else total + tensor
        pairs += data["meta"]["pairs"]
        images.update(data["meta"].get("images", {}))
    ids = {word: sums[word] / counts[word] for word in sums}
    ids[UNIVERSAL] = total / sum(counts.values())
    meta = dict(first["meta"], pairs=pairs, images=images, query={}, target={}, subtokens={})
    save_pt(output_file, {"meta": meta, "layers": first["layers"], "cells": first["cells"], "ids": ids})
    print(f"average_id: {len(pairs)} pairs averaged into {output_file} ({len(sums)} words and {UNIVERSAL!r})")
    return 0


def axes(ids, cells, size=AXIS_SIZE):
    """x and y axes (Tensor[L, D] each) of IDs Tensor[L, C, D]: mean differences along rows and columns at `size`.

    x = mean over rows j and x1 < x2 of ID(x2, j) - ID(x1, j); y likewise over columns and y1 < y2.
    """
    index = {(i, j): k for k, (i, j, s) in enumerate(cells) if s == size}
    if not index:
        raise UserError(f"no cell of size {size}; the axes are defined on size-{size} images")
    xs, ys = sorted({i for i, _ in index}), sorted({j for _, j in index})
    dx = [ids[:, index[(x2, j)]] - ids[:, index[(x1, j)]] for j in ys for x1 in xs for x2 in xs if x1 < x2
          if (x1, j) in index and (x2, j) in index]
    dy = [ids[:, index[(i, y2)]] - ids[:, index[(i, y1)]] for i in xs for y1 in ys for y2 in ys if y1 < y2
          if (i, y1) in index and (i, y2) in index]
    return torch.stack(dx).mean(dim=0), torch.stack(dy).mean(dim=0)


def compute_axes(id_file, output_dir=None, size=AXIS_SIZE):
    """Write {model}_x.pt and {model}_y.pt beside (or into output_dir) for every key of an ID file."""
    id_file = Path(id_file)
    data = load_pt(id_file)
    out = Path(output_dir) if output_dir else id_file.parent
    x, y = {}, {}
    for word, tensor in data["ids"].items():
        x[word], y[word] = axes(tensor, data["cells"], size)
    meta = dict(data["meta"], axis_size=size)
    stem = id_file.stem
    save_pt(out / f"{stem}_x.pt", {"meta": meta, "layers": data["layers"], "axis": x})
    save_pt(out / f"{stem}_y.pt", {"meta": meta, "layers": data["layers"], "axis": y})
    print(f"compute_axes: x and y axes of {len(x)} keys written to {out / (stem + '_x.pt')} and {out / (stem + '_y.pt')}")
    return 0


TEXT_WORDS = ("left", "right")


def text_queries(folder, words=TEXT_WORDS, template=QUERY):
    """{word: query} of the text-only file: the words read in the query of `folder`'s pair."""
    query = next(iter(queries_of([folder], template).values()))
    return {w: query for w in words}


def text_embeddings(extractor, image_dir, output_dir, words=TEXT_WORDS, layers=None, query_template=QUERY):
    """Text-only hidden states of `words` in the query of the first pair (name order): {model}_text.pt."""
    first = pair_folders(image_dir)[0]
    a, b, _ = read_pair(first)
    query = query_template.format(a=a, b=b)
    text = extractor.prompt(query, with_image=False)
    layer_ids = extractor.resolve_layers(layers, with_image=False)
    embeds, subtokens = {}, {}
    for word in words:
        target = extractor.target_position(text, query, word)
        embeds[word] = extractor.hidden([text], None, target, layer_ids)[:, 0]
        subtokens[word] = target.subtokens
    meta = file_meta(extractor, [first], {w: query for w in words}, {w: w for w in words}, subtokens, layers)
    meta["image_layers"] = [extractor.image_index(k) for k in layer_ids]   # the same depth in an image forward
    out = Path(output_dir) / f"{extractor.choice.name}_text.pt"
    save_pt(out, {"meta": meta, "layers": layer_ids, "embeds": embeds})
    print(f"text_embed {extractor.choice.name}: {', '.join(words)} from {query!r} written to {out}")
    return 0
