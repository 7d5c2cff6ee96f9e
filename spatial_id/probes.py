"""Linear probes: can a layer's hidden state of the target word tell the target's column and row?

Per layer, two ridge least-squares probes (column i, row j) are fitted on the
IDs of the training pairs and scored on held-out pairs (a prediction counts
when it rounds to the true index); the control fits the same probes on
training labels shuffled at random. Accuracies come with bootstrap 95%
intervals over the test images. No dependency beyond torch.
"""

from pathlib import Path

import numpy as np

from batchkit.errors import UserError
from batchkit.files import atomic_path, write_json

RIDGE = 1e-3            # relative to the mean squared feature: keeps the solve stable when D > N
BOOTSTRAP = 1000
AXES = {"column": 0, "row": 1}


def fit(x, y, ridge=RIDGE):
    """Weights (D + 1) of the ridge least-squares fit y ~ x w + b, x: N x D float64."""
    design = np.hstack([x, np.ones((len(x), 1))])
    scale = ridge * float(np.mean(x ** 2)) * len(x) if x.size else ridge
    gram = design.T @ design + scale * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ y)


def predict(w, x, classes):
    """Integer predictions: the fit rounded and clipped to 0..classes-1."""
    raw = np.hstack([x, np.ones((len(x), 1))]) @ w
    return np.clip(np.rint(raw), 0, classes - 1).astype(int)


def bootstrap_ci(correct, resamples=BOOTSTRAP, seed=0):
    """95% interval of the mean of a 0/1 vector by the percentile bootstrap (seeded)."""
    correct = np.asarray(correct, dtype=float)
    if correct.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, correct.size, (resamples, correct.size))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def probe_layer(train_x, train_cells, test_x, test_cells, grid, seed=0):
    """{"column"|"row": {"accuracy", "ci", "control", "control_ci"}} for one layer's features."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, axis in AXES.items():
        y_train = np.array([c[axis] for c in train_cells], dtype=float)
        y_test = np.array([c[axis] for c in test_cells], dtype=int)
        hit = predict(fit(train_x, y_train), test_x, grid) == y_test
        control = predict(fit(train_x, rng.permutation(y_train)), test_x, grid) == y_test
        out[name] = {"accuracy": float(hit.mean()), "ci": bootstrap_ci(hit, seed=seed),
                     "control": float(control.mean()), "control_ci": bootstrap_ci(control, seed=seed + 1)}
    return out


def split_pairs(names, heldout=None, seed=0):
    """(training pairs, held-out pairs): the given held-out names, or a seeded third of the pairs (at least one)."""
    names = sorted(names)
    if heldout:
        unknown = sorted(set(heldout) - set(names))
        if unknown:
            raise UserError(f"--heldout-pairs {', '.join(unknown)}: not among the pairs ({', '.join(names)})")
        test = sorted(heldout)
    else:
        rng = np.random.default_rng(seed)
        test = sorted(rng.choice(names, max(1, len(names) // 3), replace=False).tolist())
    train = [n for n in names if n not in test]
    if not train or not test:
        raise UserError(f"probes need training and held-out pairs; got {len(names)} pair(s): {', '.join(names)}")
    return train, test


def run_probes(pair_ids, layers, grid, heldout=None, seed=0):
    """Probe results per layer from {pair: (ids Tensor[L, C, D], cells)}."""
    train, test = split_pairs(list(pair_ids), heldout, seed)

    def stack(names, li):
        x = np.concatenate([pair_ids[n][0][li].double().numpy() for n in names])
        cells = [c for n in names for c in pair_ids[n][1]]
        return x, cells
    results = {}
    for li, layer in enumerate(layers):
        train_x, train_cells = stack(train, li)
        test_x, test_cells = stack(test, li)
        results[layer] = probe_layer(train_x, train_cells, test_x, test_cells, grid, seed)
    return {"train_pairs": train, "heldout_pairs": test, "grid": grid, "chance": 1.0 / grid,
            "layers": {str(k): v for k, v in results.items()}}


def write_probe_outputs(results, output_dir, title=""):
    """probes.json and probes.png (accuracy by layer with 95% intervals, and the shuffled-label control)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(output_dir)
    write_json(out / "probes.json", results)
    layers = [int(k) for k in results["layers"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, name in zip(axes, AXES):
        for key, ci, style in (("accuracy", "ci", {"marker": "o", "label": "probe"}),
                               ("control", "control_ci", {"marker": ".", "color": "0.6", "label": "shuffled labels"})):
            values = [results["layers"][str(k)][name][key] for k in layers]
            lo = [results["layers"][str(k)][name][ci][0] for k in layers]
            hi = [results["layers"][str(k)][name][ci][1] for k in layers]
            line = ax.plot(layers, values, **style)[0]
            ax.fill_between(layers, lo, hi, color=line.get_color(), alpha=0.2)
        ax.axhline(results["chance"], color="k", lw=0.8, ls=":", label="chance")
        ax.set_title(f"{title} {name} from the target word", fontsize=10)
        ax.set_xlabel("layer (hidden-state index)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy (95% CI)")
    axes[0].legend(fontsize=8)
    with atomic_path(out / "probes.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
