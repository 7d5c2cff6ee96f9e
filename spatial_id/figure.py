"""Figure 5: spatial IDs of size-224 cells projected onto the orthonormalised x/y plane, and a layer sweep."""

from pathlib import Path

import numpy as np
import torch

from batchkit.errors import UserError
from batchkit.files import atomic_path

from .ids import AXIS_SIZE, UNIVERSAL, axes, load_pt


def plane(x, y):
    """Orthonormal basis (2 x D) of the plane spanned by the x and y axes (Gram-Schmidt, x first)."""
    if x.norm() <= 1e-12 or y.norm() <= 1e-12:
        raise UserError("the x or y axis is zero at this layer (e.g. layer 0, before any position reaches the word); "
                        "no plane to project on")
    e1 = x / x.norm()
    y_perp = y - (y @ e1) * e1
    if y_perp.norm() < 1e-8 * y.norm():
        raise UserError("the x and y axes are parallel at this layer; no plane to project on")
    return torch.stack([e1, y_perp / y_perp.norm()])


def projection(data, word=UNIVERSAL, layer=None, size=AXIS_SIZE):
    """(coords C x 2, cells, explained-variance fraction, basis) of one key's size-`size` IDs at one layer."""
    if word not in data["ids"]:
        raise UserError(f"no IDs for {word!r} in this file; keys: {', '.join(data['ids'])}")
    layers = data["layers"]
    li = layers.index(layer) if layer is not None and layer in layers else None
    if layer is not None and li is None:
        raise UserError(f"layer {layer} was not extracted; extracted layers: {layers[0]}..{layers[-1]}")
    li = len(layers) // 2 if li is None else li
    ids = data["ids"][word].float()
    x, y = axes(ids, data["cells"], size)
    keep = [k for k, c in enumerate(data["cells"]) if c[2] == size]
    v = ids[li, keep]
    v = v - v.mean(dim=0)
    basis = plane(x[li], y[li])
    coords = v @ basis.T
    total = float((v ** 2).sum())
    if total <= 0:
        raise UserError(f"the IDs of layer {layers[li]} do not vary; nothing to project")
    explained = float((coords ** 2).sum()) / total
    return coords.numpy(), [data["cells"][k] for k in keep], explained, basis, layers[li]


SHUFFLES = 20     # permutations of the cells averaged for the shuffled-cell control


def shuffled_explained(data, word=UNIVERSAL, layer=None, size=AXIS_SIZE, shuffles=SHUFFLES, seed=0):
    """The control for the explained variance: the same IDs with their cells permuted at random (seeded), so
    the x/y axes are built from the wrong cells; the mean fraction over `shuffles` permutations. A model without
    spatial IDs explains as much with shuffled cells as with the true ones."""
    g = torch.Generator().manual_seed(seed)
    cells = data["cells"]
    keep = [k for k, c in enumerate(cells) if c[2] == size]
    fractions = []
    for _ in range(shuffles):
        order = torch.randperm(len(keep), generator=g).tolist()
        permuted = list(cells)
        for k, src in zip(keep, order):
            permuted[k] = cells[keep[src]]
        try:
            fractions.append(projection(dict(data, cells=permuted), word, layer, size)[2])
        except UserError:
            continue
    return float(np.mean(fractions)) if fractions else float("nan")


def marker_cosines(text, layer, basis):
    """{word: (cosine with the x axis, cosine with the orthonormalised y axis)} of the text-only embeddings at the
    same depth, centred on their mean like the IDs; None if the text file lacks that layer."""
    depths = text["meta"].get("image_layers", text["layers"])          # Mllama's text-only numbering differs
    if layer not in depths:
        return None
    ti = depths.index(layer)
    emb = {w: e[ti].float() for w, e in text["embeds"].items()}
    mean = torch.stack(list(emb.values())).mean(dim=0)
    out = {}
    for w, e in emb.items():
        d = e - mean
        n = float(d.norm())
        out[w] = tuple(float(b @ d) / n if n > 0 else 0.0 for b in basis)
    return out


def explained_by_layer(data, word=UNIVERSAL, size=AXIS_SIZE):
    """[(layer, explained-variance fraction of the x/y plane)] for every extracted layer."""
    out = []
    for layer in data["layers"]:
        try:
            out.append((layer, projection(data, word, layer, size)[2]))
        except UserError:
            out.append((layer, float("nan")))
    return out


def _cell_colour(i, j, grid):
    import matplotlib.colors as mcolors
    hue = i / max(grid, 1)
    value = 1.0 - 0.55 * j / max(grid - 1, 1)
    return mcolors.hsv_to_rgb((hue, 0.85, value))


def draw_fig5(ax, data, text=None, word=UNIVERSAL, layer=None, title_prefix=""):
    coords, cells, explained, basis, layer = projection(data, word, layer)
    grid = max(max(c[0], c[1]) for c in cells) + 1
    pos = {(c[0], c[1]): coords[k] for k, c in enumerate(cells)}
    for (i, j), p in pos.items():                 # grid lines between neighbouring cells
        for di, dj in ((1, 0), (0, 1)):
            q = pos.get((i + di, j + dj))
            if q is not None:
                ax.plot([p[0], q[0]], [p[1], q[1]], color="0.8", lw=0.8, zorder=1)
    for (i, j), p in pos.items():
        ax.scatter(p[0], p[1], color=_cell_colour(i, j, grid), s=90, edgecolor="k", lw=0.5, zorder=2)
        ax.annotate(f"{i},{j}", p, textcoords="offset points", xytext=(5, 4), fontsize=7)
    cosines = marker_cosines(text, layer, basis) if text is not None else None
    if cosines:
        reach = float(np.abs(coords).max())              # a marker at the edge only if it lies in the plane
        for w, (cx, cy) in cosines.items():
            p = np.array([cx, cy]) * reach
            ax.scatter(p[0], p[1], marker="*", s=260, color="k", zorder=3)
            ax.annotate(f'text "{w}" (cos x {cx:+.2f}, y {cy:+.2f})', p, textcoords="offset points", xytext=(6, -10),
                        fontsize=8, weight="bold")
    ax.set_xlabel("x axis (column)")
    ax.set_ylabel("y axis (row, orthonormalised)")
    ax.invert_yaxis()
    control = shuffled_explained(data, word, layer)
    name = title_prefix.rstrip(": ") or data["meta"].get("model", "")      # a label says what the model is
    ax.set_title(f"{name}, layer {layer}, {word}\nx/y plane explains "
                 f"{explained:.0%} of the variance (shuffled cells: {control:.0%})\n"
                 "text markers at their cosines with the axes, times the IDs' reach", fontsize=9)
    return explained


def draw_sweep(ax, datas, labels=None, word=UNIVERSAL):
    """The x/y plane's explained variance per layer of each ID file, beside its shuffled-cell control; integer layer
    ticks; returns each file's best (layer, fraction)."""
    import matplotlib.ticker
    best = []
    for data, label in zip(datas, labels or [""] * len(datas)):
        sweep = explained_by_layer(data, word)
        name = label or data["meta"].get("model", "")
        line = ax.plot([s[0] for s in sweep], [s[1] for s in sweep], marker="o", label=f"{name} true cells")[0]
        ax.plot([s[0] for s in sweep], [shuffled_explained(data, word, s[0]) for s in sweep], marker=".", ls="--",
                color=line.get_color(), alpha=0.6, label=f"{name} shuffled cells (control)")
        best.append(max(sweep, key=lambda s: -1 if np.isnan(s[1]) else s[1]))
    ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("layer (hidden-state index, 0 = embeddings; no point where the IDs have no x/y plane)")
    ax.set_ylabel("variance in x/y plane")
    ax.set_ylim(0, 1)
    ax.set_title(f"{word}: explained variance of the x/y plane per layer, beside shuffled cells", fontsize=10)
    ax.grid(alpha=0.3)
    return best


def write_fig5(id_files, output, text_files=None, word=UNIVERSAL, layer=None, sweep_output=None, labels=None):
    """Write Figure 5 of one or more ID files side by side (and the layer sweep) as PNG; returns the exit code."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    id_files = [id_files] if isinstance(id_files, (str, Path)) else list(id_files)
    text_files = [text_files] if isinstance(text_files, (str, Path)) else list(text_files or [])
    if text_files and len(text_files) != len(id_files):
        raise UserError(f"--text-file: give one per --id-file ({len(id_files)}), or none")
    if labels and len(labels) != len(id_files):
        raise UserError(f"--labels: give one per --id-file ({len(id_files)}), or none")
    datas = [load_pt(f) for f in id_files]
    texts = [load_pt(f, "text-embedding file") for f in text_files] or [None] * len(datas)
    labels = [f"{label}: " for label in labels] if labels else [""] * len(datas)
    fig, axs = plt.subplots(1, len(datas), figsize=(6.5 * len(datas), 6), squeeze=False)
    for ax, data, text, label, path in zip(axs[0], datas, texts, labels, id_files):
        explained = draw_fig5(ax, data, text, word, layer, label)
        print(f"fig5: {label}{path}: explained variance {explained:.1%}, shuffled-cell control "
              f"{shuffled_explained(data, word, layer):.1%}")
    _save(fig, output)
    print(f"fig5: wrote {output}")
    if sweep_output:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for (layer, value), label in zip(draw_sweep(ax, datas, [label.rstrip(": ") for label in labels], word), labels):
            print(f"fig5 sweep: {label}best layer {layer}: {value:.1%}")
        _save(fig, sweep_output)
        print(f"fig5 sweep: wrote {sweep_output}")
    return 0


def _save(fig, path):
    import matplotlib.pyplot as plt
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
