"""Linear probes of the target word's position: per layer, its column and row from its hidden state.

    python spatial_id/probe.py --model llava-7b --image-dir data/extraction_data --output-dir embeds/probes/llava-7b

Extracts every pair's IDs (as compute_id.py: centred per pair, balanced when
the grids are), fits ridge least-squares probes for the column and the row on
the training pairs, scores them on held-out pairs (--heldout-pairs, default a
seeded third), with a shuffled-label control and bootstrap 95% intervals.
Writes OUTPUT_DIR/probes.json and OUTPUT_DIR/probes.png.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli
from batchkit.errors import UserError
from spatial_id.extract import QUERY, Extractor, check_query
from spatial_id.ids import extract_pair, pair_folders
from spatial_id.probes import run_probes, write_probe_outputs
from spatial_id.registry import add_model_args, parse_layers, resolve_model


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--image-dir", required=True, help="a folder of pair folders (at least two pairs)")
    p.add_argument("--output-dir", required=True, help="where probes.json and probes.png go")
    p.add_argument("--heldout-pairs", nargs="+", default=None, help="pairs to test on, e.g. dog_teapot (default: a seeded third)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the control's shuffles and the bootstrap (default %(default)s)")
    add_model_args(p)
    return p


def main(args):
    choice = resolve_model(args.model, args.model_path)
    folders = pair_folders(args.image_dir)
    if len(folders) < 2:
        raise UserError(f"{args.image_dir}: probes need at least two pairs (train and held out); found {len(folders)}")
    extractor = Extractor(choice, args.device, args.dtype)
    template = check_query(args.query or QUERY)
    pair_ids, layers, grid = {}, None, 0
    for folder in folders:
        ids, cells, layers, _meta = extract_pair(extractor, folder, parse_layers(args.layers), args.batch_size, template)
        pair_ids[folder.name] = (ids, cells)
        grid = max(grid, 1 + max(max(c[0], c[1]) for c in cells))
    results = run_probes(pair_ids, layers, grid, args.heldout_pairs, args.seed)
    results["meta"] = {"model": choice.name, "model_path": choice.source, "dtype": extractor.dtype_name, "query": template}
    write_probe_outputs(results, args.output_dir, choice.name)
    best = max(results["layers"].items(), key=lambda kv: kv[1]["column"]["accuracy"] + kv[1]["row"]["accuracy"])
    print(f"probe {choice.name}: {len(results['train_pairs'])} training and {len(results['heldout_pairs'])} held-out pairs; "
          f"best layer {best[0]}: column {best[1]['column']['accuracy']:.0%} (control {best[1]['column']['control']:.0%}), "
          f"row {best[1]['row']['accuracy']:.0%} (control {best[1]['row']['control']:.0%}); "
          f"wrote {Path(args.output_dir) / 'probes.json'} and probes.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
