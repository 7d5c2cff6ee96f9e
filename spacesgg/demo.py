"""`make demo`: every pipeline on synthetic data, offline, ending with a table of what it made.

    python -m spacesgg.demo --data-dir data --output-dir outputs

Each step's progress bars and per-record lines go to OUTPUT_DIR/demo.log; the
terminal keeps the step headers, warnings and errors, and the final table
(--verbose shows everything). A step that exits 1 (some records failed) lets
the next run; one that exits 2 or more stops the demo. The exit code is the
worst of the steps.
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from batchkit.cli import make_parser, run_cli

ROOT = Path(__file__).resolve().parents[1]
SHOWN = ("warning:", "error:", "stopped at")          # what the terminal keeps of a step's output


@dataclass
class Step:
    title: str
    argv: list
    env: dict = field(default_factory=dict)


def steps(data, out, python=sys.executable):
    """The demo's steps, in order (paths as given: relative ones from the repository root)."""
    scenes, grid, models = data / "synthetic_scenes", data / "grid_data", data / "models"
    sgg, bench, tiny = out / "spacesgg", out / "spacesgg" / "benchmark", out / "tiny_spatial"
    grid_bench = out / "grid_benchmark"
    return [
        Step("synthetic RGB-D scenes", [python, "dataengine/make_scenes.py", "--output-dir", scenes]),
        Step("SpaceSGG stages 1 and 2 (template answers, offline), half the images held out as a benchmark",
             ["bash", "run_spacesgg.sh", scenes, sgg], {"PYTHON": python, "VAL_FRACTION": "0.5"}),
        Step("the benchmark asked: template answers from the geometry", [
            python, "-m", "spacesgg.ask", "--benchmark", bench / "benchmark.jsonl", "--image-root", scenes / "images",
            "--output", bench / "template.jsonl", "--backend", "template", "--anno-file", sgg / "multiview.json"]),
        Step("... and scored (a sanity check: anything below 100% is a bug)", [
            python, "-m", "spacesgg.score", "--benchmark", bench / "benchmark.jsonl", "--predictions",
            bench / "template.jsonl", "--output", bench / "template.scores.json"]),
        Step("inspector pages", [python, "-m", "spacesgg.inspect", "--anno-file", sgg / "multiview.json", "--records",
                                 *(sgg / f"{k}.json" for k in ("layer", "between", "rotation", "distance")),
                                 "--output-dir", sgg / "inspect", "--image-root", scenes / "images"]),
        Step("spatial-ID grid images (2 pairs)", ["bash", "dataengine/grid_data.sh", grid], {"PYTHON": python}),
        Step("a tiny LLaVA with random weights", [python, "dataengine/make_tiny_models.py", "--families", "llava",
                                                   "--output-dir", models]),
        Step("its spatial IDs", ["bash", "spatial_id/small_id_grid.sh", grid, out / "grid_id"],
             {"PYTHON": python, "MODELS": f"llava-7b={models / 'llava'}", "DEVICE": "cpu"}),
        Step("its Figure 5", [python, "spatial_id/fig5.py", "--id-file", out / "grid_id" / "llava-7b.pt", "--text-file",
                              out / "grid_id" / "llava-7b_text.pt", "--labels", "tiny LLaVA, random weights",
                              "--output", out / "grid_id" / "fig5.png", "--sweep-output", out / "grid_id" / "fig5_layers.png"]),
        Step("random vs trained tiny LLaVA: Figure 5 and interventions", ["bash", "spatial_id/tiny_spatial_demo.sh",
                                                                          tiny], {"PYTHON": python}),
        Step("a benchmark of their held-out grid images", [python, "-m", "spacesgg.benchmark", "--from-grid",
                                                             tiny / "heldout_grid", "--output-dir", grid_bench]),
        *[Step(f"asked: the {name} tiny LLaVA, greedy answers", [
            python, "-m", "spacesgg.ask", "--benchmark", grid_bench / "benchmark.jsonl", "--image-root", tiny / "heldout_grid",
            "--output", grid_bench / f"{name}.jsonl", "--backend", "local", "--model", f"llava-7b={folder}", "--device", "cpu",
            "--batch-size", "64", "--max-new-tokens", "4"]) for name, folder in
          (("trained", ROOT / "spatial_id" / "assets" / "tiny-spatial-llava"), ("random", tiny / "random_model"))],
        *[Step(f"scored: the {name} one", [python, "-m", "spacesgg.score", "--benchmark", grid_bench / "benchmark.jsonl",
                                           "--predictions", grid_bench / f"{name}.jsonl", "--output",
                                           grid_bench / f"{name}.scores.json"]) for name in ("trained", "random")],
    ]


def _records(path):
    try:
        return f"{len(json.loads(path.read_text(encoding='utf-8')))} records"
    except (OSError, ValueError, TypeError):
        return "unreadable"


def _scores(path):
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        types = result["types"]
        parts = [f"qualitative accuracy {result['qualitative_accuracy']:.0%}"] if "qualitative_accuracy" in result else []
        parts += [f"{kind} success_25 {t['success_25']:.0%}" for kind, t in types.items() if t.get("success_25") is not None][:1]
        parts += [f"scene-graph recall {t['recall']:.0%}" for kind, t in types.items() if t.get("recall") is not None]
        unparsed = sum(t["unparsed"] for t in types.values())
        return ", ".join(parts + ([f"{unparsed} answers unparsed"] if unparsed else []))
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable"


def outputs_table(data, out):
    """(path, what it is) of the demo's outputs that exist."""
    sgg, tiny, grid_bench = out / "spacesgg", out / "tiny_spatial", out / "grid_benchmark"
    rows = [
        (data / "synthetic_scenes", lambda p: f"{len(list((p / 'images').glob('*.png')))} synthetic RGB-D scenes, "
                                              "true geometry in expected.json"),
        (sgg / "multiview.json", lambda p: "stage 1: depth layers and relations from four views"),
        (sgg / "layer.json", lambda p: f"{_records(p)}: layer descriptions (LLaVA format)"),
        (sgg / "between.json", lambda p: f"{_records(p)}: comparative QA"),
        (sgg / "rotation.json", lambda p: f"{_records(p)}: rotation conversations"),
        (sgg / "distance.json", lambda p: f"{_records(p)}: metric distance QA"),
        (sgg / "inspect" / "index.html", lambda p: "inspector: open in a browser"),
        (sgg / "benchmark" / "benchmark.jsonl", lambda p: f"{len(p.read_text().splitlines())} benchmark questions about "
                                                          "held-out images (split.json beside it)"),
        (sgg / "benchmark" / "template.scores.json", lambda p: f"template answers scored: {_scores(p)}"),
        (out / "grid_id" / "fig5.png", lambda p: "Figure 5, tiny LLaVA with random weights (its IDs mean nothing)"),
        (tiny / "fig5.png", lambda p: "Figure 5, random | trained tiny LLaVA, side by side"),
        (tiny / "fig5_layers.png", lambda p: "their x/y plane per layer, beside shuffled cells"),
        (tiny / "random" / "interventions.png", lambda p: "ID swaps: random model (answers do not move)"),
        (tiny / "trained" / "interventions.png", lambda p: "ID swaps: trained model (answers flip across the reference)"),
        (tiny / "trained" / "steering.png", lambda p: "steering with universal IDs: the trained model's answer follows"),
        (tiny / "random" / "steering.png", lambda p: "steering with universal IDs: the random model's does not"),
        (tiny / "trained" / "in_between" / "in_between.png", lambda p: "steered toward every cell: the answer rate per cell"),
        (grid_bench / "trained.scores.json", lambda p: f"held-out grid benchmark, trained tiny LLaVA: {_scores(p)}"),
        (grid_bench / "random.scores.json", lambda p: f"held-out grid benchmark, random tiny LLaVA: {_scores(p)}"),
    ]
    return [(path, what(path)) for path, what in rows if path.exists()]


def run_step(k, n, step, log, verbose):
    """Run one step from the repository root; its output to the log (and the terminal's share of it); the exit code."""
    print(f"== [{k}/{n}] {step.title}", flush=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n== [{k}/{n}] {step.title}: {' '.join(map(str, step.argv))}\n")
    proc = subprocess.Popen([str(a) for a in step.argv], cwd=ROOT, env={**os.environ, **step.env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    with open(log, "a", encoding="utf-8") as f:
        for line in proc.stdout:
            f.write(line)
            for part in line.replace("\r", "\n").splitlines():
                if verbose or part.lstrip().startswith(SHOWN):
                    print(f"   {part}" if not verbose else part, flush=True)
    return proc.wait()


def _shown(path):
    """A path as the user would type it: relative to the working directory where it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def demo(data_dir, output_dir, verbose=False):
    """Run every step, then print the table of outputs; returns the worst exit code."""
    data, out = Path(data_dir).resolve(), Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    log.write_text(f"make demo, {time.strftime('%Y-%m-%d %H:%M:%S')}\n", encoding="utf-8")
    start, worst, plan = time.perf_counter(), 0, steps(data, out)
    for k, step in enumerate(plan, 1):
        code = run_step(k, len(plan), step, log, verbose)
        worst = max(worst, code)
        if code:
            print(f"   exit {code}" + ("; stopping (fix the input it names, then rerun: finished steps resume)"
                                      if code >= 2 else "; going on"), flush=True)
        if code >= 2:
            break
    rows = [(_shown(path), what) for path, what in outputs_table(data, out)] + [(_shown(log), "everything the steps printed")]
    width = max(len(p) for p, _ in rows)
    print(f"\nmake demo: {'done' if worst == 0 else f'finished with exit {worst}'} in "
          f"{time.perf_counter() - start:.0f}s; what it made:")
    for path, what in rows:
        print(f"  {path:<{width}}  {what}")
    return worst


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--data-dir", default="data", help="where the demo's input data go (default %(default)s)")
    p.add_argument("--output-dir", default="outputs", help="where its outputs and demo.log go (default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="show every line the steps print, progress bars included")
    return p


def main(args):
    return demo(args.data_dir, args.output_dir, args.verbose)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
