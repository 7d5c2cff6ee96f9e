"""Steering a VLM's spatial answer with spatial IDs: a dose-response of moving the target word's state toward another
cell, beside a random direction of the same norm.

At hidden-state index L (0 = embeddings), the target word's state h gets
  absolute: s x (ID[target cell] - ID[own cell])
  relative: that difference rescaled to s x |h| (the published form; 5x in its adversarial steering)
and the control adds a random direction of exactly the same norm (seeded). The model's answer (its choice between
its two answer words' first tokens) and the logit margin between them are read before and after. `opposite` steers
each image to the cell mirrored across the reference's column (row, vertically), or the nearest cell on that side;
`all` to every cell, so the answer rate per target cell shows whether the model reads a continuum ("in between").
The shift goes through the same hooks as intervention.py (only the target's state at L changes).
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from batchkit.errors import UserError

from .intervention import DIRECTIONS, image_jobs, repeat_inputs

TARGETS = ("opposite", "all")
NORMS = ("relative", "absolute")


def bootstrap_mean_ci(values, seed=0, n=1000):
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    picks = np.random.default_rng(seed).integers(values.size, size=(n, values.size))
    means = values[picks].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def opposite_cell(own, reference, axis, grid):
    """The cell mirrored across the reference's column (axis 0) or row (axis 1), kept on the grid and on the other
    side of the reference; None when the object shares the reference's column (row)."""
    side = np.sign(own[axis] - reference[axis])
    if side == 0:
        return None
    mirrored = int(np.clip(2 * reference[axis] - own[axis], 0, grid - 1))
    if np.sign(mirrored - reference[axis]) != -side:
        return None                                      # no cell on the other side (the reference is at the edge)
    cell = list(own)
    cell[axis] = mirrored
    return tuple(cell)


def check_ids(id_data, extractor, layers):
    """An ID file of the loaded model (snapshot and hidden size), holding every layer asked for."""
    hidden = extractor.model.config.get_text_config().hidden_size
    width = next(iter(id_data["ids"].values())).shape[-1]
    if width != hidden:
        raise UserError(f"the ID file holds vectors of size {width}, the loaded model's states are {hidden}: IDs of "
                        "another model; extract them with this one")
    missing = [layer for layer in layers if layer not in id_data["layers"]]
    if missing:
        raise UserError(f"layer {missing[0]} is not in the ID file (it holds {id_data['layers'][0]}..{id_data['layers'][-1]})")


def steer_experiment(intervener, folders, id_data, layers, scales, query_template, norm="relative", targets="opposite",
                     size=None, batch_size=32, seed=0, word="universal"):
    """{"layers": {layer: {scale: outcomes}}, "cells": {layer: {scale: {"i,j": rate of the second answer}}}}."""
    ex = intervener.ex
    axis = DIRECTIONS[intervener.direction]["axis"]
    rng = torch.Generator().manual_seed(seed)
    id_index = {tuple(c): k for k, c in enumerate(id_data["cells"])}
    tables = {layer: id_data["ids"][word][id_data["layers"].index(layer)].float() for layer in layers}
    grid = 1 + max(max(c[0], c[1]) for c in id_data["cells"])
    results = {layer: {s: {"follow": [], "shift": [], "control_follow": [], "control_shift": []} for s in scales}
               for layer in layers}
    second = {layer: {s: {} for s in scales} for layer in layers}          # target cell -> [answered the second word]
    for pair, path, own, ref in tqdm(image_jobs(intervener, folders, query_template, size), desc="images", unit="image"):
        chosen = pair["chosen"]
        if own[axis] == ref[axis] or (own[0], own[1], chosen) not in id_index:
            continue                                         # no defined answer to steer
        if targets == "opposite":
            goals = [opposite_cell(own, ref, axis, grid)]
        else:
            goals = [(i, j) for j in range(grid) for i in range(grid) if (i, j) != own]
        goals = [g for g in goals if g is not None and (g[0], g[1], chosen) in id_index]
        if not goals:
            continue
        with Image.open(path) as im:
            inputs = ex._inputs([pair["text"]], [im.convert("RGB")])
        base = intervener.logits(inputs, pair["target"], 0, None, pair["answers"])[0]
        before_margin = float(base[1] - base[0])
        for layer in layers:
            table = tables[layer]
            own_id = table[id_index[(own[0], own[1], chosen)]]
            rows = []                                        # (goal, scale, kind, delta)
            for goal in goals:
                d = table[id_index[(goal[0], goal[1], chosen)]] - own_id
                noise = torch.randn(d.shape, generator=rng)
                for s in scales:
                    delta = s * d if norm == "absolute" else s * d / d.norm().clamp_min(1e-12)
                    control = noise / noise.norm() * delta.norm()
                    rows += [(goal, s, "steer", delta), (goal, s, "control", control)]
            for start in range(0, len(rows), batch_size):
                chunk = rows[start:start + batch_size]
                out = intervener.logits(repeat_inputs(inputs, len(chunk)), pair["target"], layer,
                                        torch.stack([r[3] for r in chunk]), pair["answers"], relative=norm == "relative")
                for (goal, s, kind, _), logit in zip(chunk, out):
                    goal_side = 1 if goal[axis] > ref[axis] else -1 if goal[axis] < ref[axis] else 0
                    answer = int(logit.argmax())
                    shift = (float(logit[1] - logit[0]) - before_margin) * (goal_side or 1)
                    if kind == "steer":
                        second[layer][s].setdefault(f"{goal[0]},{goal[1]}", []).append(answer)
                    if goal_side == 0:
                        continue
                    follows = int(answer == (1 if goal_side > 0 else 0))
                    prefix = "" if kind == "steer" else "control_"
                    results[layer][s][prefix + "follow"].append(follows)
                    results[layer][s][prefix + "shift"].append(shift)
    out = {"layers": {}, "cells": {}}
    for layer in layers:
        out["layers"][layer] = {}
        for s in scales:
            r = results[layer][s]
            out["layers"][layer][s] = {
                "n": len(r["follow"]),
                "follow": _mean(r["follow"]), "follow_ci": bootstrap_mean_ci(r["follow"], seed),
                "margin_shift": _mean(r["shift"]), "margin_shift_ci": bootstrap_mean_ci(r["shift"], seed),
                "control_follow": _mean(r["control_follow"]), "control_follow_ci": bootstrap_mean_ci(r["control_follow"], seed),
                "control_margin_shift": _mean(r["control_shift"]),
                "control_margin_shift_ci": bootstrap_mean_ci(r["control_shift"], seed)}
        out["cells"][layer] = {s: {cell: _mean(v) for cell, v in sorted(second[layer][s].items())} for s in scales}
    return out


def _mean(values):
    return round(float(np.mean(values)), 4) if len(values) else None


def write_steer_outputs(result, meta, output_dir):
    """steering.json, steering.png (follow rate by scale, steered vs control, a panel per layer) and, for --targets
    all, in_between.png (the rate of the second answer per target cell, at each layer's largest scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from batchkit.files import atomic_path, write_json

    from .intervention import model_label
    out = Path(output_dir)
    serial = {"meta": meta,
              "layers": {str(k): {f"{s:g}": v for s, v in by.items()} for k, by in result["layers"].items()},
              "cells": {str(k): {f"{s:g}": v for s, v in by.items()} for k, by in result["cells"].items()}}
    write_json(out / "steering.json", serial)
    layers = list(result["layers"])
    fig, axs = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.4), squeeze=False, sharey=True)
    for ax, layer in zip(axs[0], layers):
        scales = list(result["layers"][layer])
        for key, label, style in (("follow", "steered", {"marker": "o"}),
                                  ("control_follow", "random, same norm", {"marker": ".", "color": "0.55"})):
            values = [result["layers"][layer][s][key] for s in scales]
            line = ax.plot(scales, [np.nan if v is None else v for v in values], label=label, **style)[0]
            cis = [result["layers"][layer][s][f"{key}_ci"] for s in scales]
            if all(cis):
                ax.fill_between(scales, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.15)
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.set_xlabel(f"scale s ({meta['norm']})")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axs[0][0].set_ylabel("answer follows the target side")
    axs[0][0].legend(fontsize=8)
    fig.suptitle(f"{model_label(meta)}: steering the target word's state toward the {meta['targets']} cell", fontsize=10)
    with atomic_path(out / "steering.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    if meta["targets"] != "all":
        return
    grid = 1 + max(max(int(v) for v in c.split(",")) for by in result["cells"].values() for s in by.values() for c in s)
    fig, axs = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), squeeze=False)
    word = DIRECTIONS[meta["direction"]]["answers"][1]
    for ax, layer in zip(axs[0], layers):
        scale = max(result["cells"][layer])
        heat = np.full((grid, grid), np.nan)
        for cell, rate in result["cells"][layer][scale].items():
            i, j = (int(v) for v in cell.split(","))
            heat[j, i] = np.nan if rate is None else rate
        im = ax.imshow(heat, vmin=0, vmax=1, cmap="coolwarm")
        for j in range(grid):
            for i in range(grid):
                if not np.isnan(heat[j, i]):
                    ax.text(i, j, f"{heat[j, i]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_title(f"layer {layer}, s = {scale:g}", fontsize=9)
        ax.set_xlabel("target column")
        ax.set_ylabel("target row")
    fig.colorbar(im, ax=axs[0].tolist(), shrink=0.8, label=f'rate of "{word}"')
    fig.suptitle(f"{model_label(meta)}: the answer when steered toward each cell", fontsize=10)
    with atomic_path(out / "in_between.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
