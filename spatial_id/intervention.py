"""Interventions on spatial IDs: move the target word's ID to another cell and see whether the answer moves.

At hidden-state index L (numbered as everywhere here: 0 = embeddings, k =
output of decoder layer k, the last = after the final norm) the target word's
state h becomes h + ID(to) - ID(from), through the same hooks as the
extraction; everything else of the forward is untouched. The answer is the
model's choice between its "left" and "right" tokens right after the chat
prompt ("above" and "below" for the vertical direction). A move *crosses*
when it takes the target to the other side of the reference's column (row)
(then a model that reads position from the ID should flip its answer) and
does not cross when it stays on the same side; the control
adds a random vector of the same norm as the move. Rates come with bootstrap
95% intervals.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from batchkit.errors import UserError

from .extract import QUERY
from .ids import read_pair
from .probes import bootstrap_ci

# direction: its query, its two answers (the first for the smaller column / row) and the cell axis it compares
DIRECTIONS = {"horizontal": {"query": QUERY, "answers": ("left", "right"), "axis": 0},
              "vertical": {"query": "Is {b} above or below {a}?", "answers": ("above", "below"), "axis": 1}}


def answer_token_ids(tokenizer, text, words, add_special=True, name="the model"):
    """The first token id of each of `words` written right after the prompt `text` (distinct, or UserError)."""
    base = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    out = []
    for word in words:
        ids = tokenizer(text + word, add_special_tokens=add_special)["input_ids"]
        if ids[:len(base)] != base or len(ids) == len(base):
            raise UserError(f"{name}'s tokenizer merges {word!r} into the prompt; cannot read its answer")
        out.append(ids[len(base)])
    if len(set(out)) < len(out):
        raise UserError(f"{name}'s tokenizer starts {' and '.join(map(repr, words))} with the same token")
    return out


class Intervener:
    """An Extractor's model, asked left-or-right with an optional shift of the target word's state."""

    def __init__(self, extractor, direction="horizontal"):
        self.ex = extractor
        self.direction = direction

    def answer_ids(self, text):
        """Token ids of the first token of each answer word right after the prompt `text`."""
        words = DIRECTIONS[self.direction]["answers"]
        return answer_token_ids(self.ex.tokenizer, text, words, self.ex._add_special(text), self.ex.choice.name)

    @contextmanager
    def shifted(self, rows, positions, layer, deltas, relative=False):
        """Within the block, the forward adds deltas[B, D] to the states at (rows, positions) at hidden-state index
        `layer` (0 = embeddings entering the decoder, k = output of decoder layer k, the last = after the norm);
        `relative`: each delta is first multiplied by the norm of the state it is added to."""
        ex = self.ex
        final = ex.num_hidden_states(True) - 1
        if deltas is None:
            yield
            return

        def shift(h):
            h = h.clone()
            d = deltas.to(h.device, h.dtype)
            if relative:
                d = d * h[rows, positions].float().norm(dim=-1, keepdim=True).to(h.dtype)
            h[rows, positions] += d
            return h

        if layer == 0:
            def pre(module, args, kwargs):
                if args:
                    return (shift(args[0]), *args[1:]), kwargs
                return args, dict(kwargs, hidden_states=shift(kwargs["hidden_states"]))
            handle = ex.decoder.layers[0].register_forward_pre_hook(pre, with_kwargs=True)
        else:
            def post(module, args, output):
                return (shift(output[0]), *output[1:]) if isinstance(output, tuple) else shift(output)
            handle = (ex.decoder.norm if layer == final else ex.decoder.layers[layer - 1]).register_forward_hook(post)
        try:
            yield
        finally:
            handle.remove()

    @torch.inference_mode()
    def logits(self, inputs, target, layer, deltas=None, answer_ids=None, relative=False):
        """Tensor[B, 2]: the logits of the two answers after each row's prompt, with deltas[B, D] (or None) added to
        the target's state at hidden-state index `layer` (times that state's norm with `relative`)."""
        ex = self.ex
        inputs = {k: v.to(ex.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        lengths = inputs["attention_mask"].sum(dim=1)
        rows = torch.arange(lengths.shape[0], device=lengths.device)
        with self.shifted(rows, lengths - target.tail, layer, deltas, relative):
            logits = ex.model(**inputs, use_cache=False).logits
        return logits[rows, lengths - 1].float()[:, answer_ids].cpu()


def repeat_inputs(inputs, n):
    """The processor outputs of one prompt and image as a batch of n identical rows: every family's processor
    concatenates per-image tensors along dim 0 (rows, or patches for Qwen2-VL), so n copies are n rows."""
    return {k: torch.cat([v] * n) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def classify(from_cell, to_cell, reference_cell, axis=0):
    """'crossing' (to the other side of the reference's column, or row for axis 1), 'not_crossing' (same side) or
    None (from or to the reference's column / row)."""
    a, b = (int(np.sign(c[axis] - reference_cell[axis])) for c in (from_cell, to_cell))
    if a == 0 or b == 0:
        return None
    return "crossing" if a != b else "not_crossing"


def rates(flips):
    """{"crossing"|"not_crossing"|"control": rate} and their 95% intervals from {kind: [0/1, ...]}."""
    out = {kind: float(np.mean(v)) if v else float("nan") for kind, v in flips.items()}
    out["ci"] = {kind: bootstrap_ci(v) for kind, v in flips.items()}
    out["n"] = {kind: len(v) for kind, v in flips.items()}
    return out


def parse_cell(text, grid, flag):
    try:
        i, j = (int(v) for v in str(text).strip("()[] ").split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r}: write a cell as i,j (column, row)") from None
    if not (0 <= i < grid and 0 <= j < grid):
        raise UserError(f"{flag} {text!r}: no such cell on a {grid} x {grid} grid (0..{grid - 1})")
    return (i, j)


def load_ids(path, extractor, word="universal"):
    """The ID file's {"layers", "cells", "ids"} for `word`, checked against the loaded model."""
    from .ids import load_pt
    data = load_pt(path)
    source = data.get("meta", {}).get("model_path")
    if source != extractor.choice.source:
        raise UserError(f"{path}: IDs of {source!r}, not of the loaded {extractor.choice.source!r}; extract them "
                        "with this model first")
    if word not in data["ids"]:
        raise UserError(f"{path}: no IDs for {word!r}; keys: {', '.join(data['ids'])}")
    return data


def image_jobs(intervener, folders, query_template, size=None):
    """(pair facts, image path, the target's cell, the reference's cell) of every image of one size (default: the
    largest) of the pair folders; the pair facts (prompt, target position, answer tokens, its cells, the size) are
    worked out once per pair."""
    ex, jobs = intervener.ex, []
    for folder in folders:
        a, b, entries = read_pair(folder)
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        query = query_template.format(a=a, b=b)
        text = ex.prompt(query, with_image=True)
        pair = {"text": text, "target": ex.target_position(text, query, b), "answers": intervener.answer_ids(text),
                "grid_cells": sorted({(c[0], c[1]) for _, c in entries}),
                "chosen": size or max(c[2] for _, c in entries)}
        for (path, cell), image in zip(entries, manifest["images"]):
            if cell[2] == pair["chosen"]:
                jobs.append((pair, path, (cell[0], cell[1]), tuple(image["reference"]["cell"])))
    return jobs


def flip_experiment(intervener, folders, id_data, layers, query_template, size=None, cells_from=None, cells_to=None,
                    batch_size=16, seed=0, word="universal"):
    """{layer: rates} over the pair folders' images of one size (random design: the manifest's reference cell)."""
    ex = intervener.ex
    axis = DIRECTIONS[intervener.direction]["axis"]
    rng = torch.Generator().manual_seed(seed)
    id_index = {tuple(c): k for k, c in enumerate(id_data["cells"])}
    for layer in layers:
        if layer not in id_data["layers"]:
            raise UserError(f"layer {layer} is not in the ID file (layers {id_data['layers'][0]}..{id_data['layers'][-1]})")
    tables = {layer: id_data["ids"][word][id_data["layers"].index(layer)].float() for layer in layers}
    flips = {layer: {"crossing": [], "not_crossing": [], "control": []} for layer in layers}
    jobs = [job for job in image_jobs(intervener, folders, query_template, size) if not cells_from or job[2] == cells_from]
    step = max(1, batch_size // 2)
    for pair, path, here, ref in tqdm(jobs, desc="images", unit="image"):
        text, target, answers, chosen = pair["text"], pair["target"], pair["answers"], pair["chosen"]
        moves = [d for d in pair["grid_cells"] if d != here and (not cells_to or d == cells_to)
                 and classify(here, d, ref, axis) is not None and (d[0], d[1], chosen) in id_index]
        if not moves or (here[0], here[1], chosen) not in id_index:
            continue
        with Image.open(path) as im:
            inputs = ex._inputs([text], [im.convert("RGB")])    # processed once for every layer and move
        before = int(intervener.logits(inputs, target, 0, None, answers).argmax(dim=1)[0])
        for layer in layers:
            table = tables[layer]
            own = table[id_index[(here[0], here[1], chosen)]]
            deltas = torch.stack([table[id_index[(d[0], d[1], chosen)]] - own for d in moves])
            noise = torch.randn(deltas.shape, generator=rng)
            noise = noise / noise.norm(dim=1, keepdim=True) * deltas.norm(dim=1, keepdim=True)
            for start in range(0, len(moves), step):
                chunk = slice(start, start + step)
                n = len(moves[chunk])                             # one forward: n moves, then their n controls
                out = intervener.logits(repeat_inputs(inputs, 2 * n), target, layer,
                                        torch.cat([deltas[chunk], noise[chunk]]), answers).argmax(dim=1).tolist()
                for d, m, c in zip(moves[chunk], out[:n], out[n:]):
                    kind = classify(here, d, ref, axis)
                    flips[layer][kind].append(int(m != before))
                    if kind == "crossing":
                        flips[layer]["control"].append(int(c != before))
    return {layer: rates(flips[layer]) for layer in layers}


def model_label(meta):
    """What a plot calls its model: the --label given (what the model is), else its alias and where it came from."""
    if meta.get("label"):
        return meta["label"]
    source = str(meta.get("model_path", ""))
    return f"{meta.get('model', '')} ({Path(source).name if Path(source).is_absolute() else source})"


def write_flip_outputs(results, meta, output_dir):
    """interventions.json and interventions.png (flip rate by layer: crossing, not crossing, control)."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from batchkit.files import atomic_path, write_json
    out = Path(output_dir)
    write_json(out / "interventions.json", {"meta": meta, "layers": {str(k): v for k, v in results.items()}})
    layers = sorted(results)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for kind, style in (("crossing", {"marker": "o"}), ("not_crossing", {"marker": "s"}),
                        ("control", {"marker": ".", "color": "0.6"})):
        values = [results[k][kind] for k in layers]
        line = ax.plot(layers, values, label=kind.replace("_", " "), **style)[0]
        ax.fill_between(layers, [results[k]["ci"][kind][0] for k in layers], [results[k]["ci"][kind][1] for k in layers],
                        color=line.get_color(), alpha=0.15)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("layer of the swap (hidden-state index)")
    ax.set_ylabel("answers flipped (95% CI)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{model_label(meta)}: swapping the target's spatial ID to another cell", fontsize=10)
    with atomic_path(out / "interventions.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
