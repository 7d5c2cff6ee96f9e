"""Spatial IDs of a VLM from grid images: the target word's hidden states per cell, mean-centred per pair.

    python spatial_id/compute_id.py --model llava-7b --image-dir data/grid_data --output-dir embeds/grid_id

IMAGE_DIR is one pair folder or a folder of pair folders (dataengine/). Without
--per-pair it writes OUTPUT_DIR/{model}.pt with each pair's target word and
"universal" (their mean); with --per-pair, OUTPUT_DIR/{a}_{b}/{model}.pt per
pair (then run average_id.py). Output already made from the same snapshot,
dtype and layers (and pairs) is skipped; output made otherwise is redone.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import add_shard_arg, make_parser, run_cli
from batchkit.errors import UserError
from batchkit.models import resolve_device  # noqa: E402
from spatial_id.extract import QUERY, Extractor, check_query
from spatial_id.ids import ALL_LAYERS, compute_ids, made_with, pair_folders, pending_pairs, text_embeddings, text_queries
from spatial_id.registry import add_model_args, parse_layers, resolve_dtype, resolve_model


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--image-dir", required=True, help="a pair folder ({a}_{b} with manifest.json) or a folder of them")
    p.add_argument("--output-dir", required=True, help="where the .pt files go")
    p.add_argument("--per-pair", action="store_true", help="one file per pair in OUTPUT_DIR/{a}_{b}/ (resumable); else one file")
    p.add_argument("--with-text", action="store_true", help="also write {model}_text.pt (text-only \"left\"/\"right\", as text_embed.py) with the same loaded model")
    add_model_args(p)
    add_shard_arg(p)
    return p


def main(args):
    choice = resolve_model(args.model, args.model_path)
    pairs = pair_folders(args.image_dir)         # fail on a bad folder before loading a model
    layers = parse_layers(args.layers)
    known = ALL_LAYERS if layers is None else sorted(set(layers)) if min(layers) >= 0 else None   # negatives need the model
    dtype = resolve_dtype(choice.family, args.dtype, resolve_device(args.device))
    out = Path(args.output_dir)
    template = check_query(args.query or QUERY)

    def current(name, folders, queries=None):
        return made_with(out / name, choice.source, dtype, known, folders, queries, template)

    if args.shard and not args.per_pair:
        raise UserError("--shard splits the pairs of --per-pair runs; add --per-pair (then average_id.py joins them)")
    if args.per_pair:
        ids_done = not pending_pairs(args.image_dir, out, choice.name, choice.source, dtype, known, template, args.shard)
    else:
        ids_done = current(f"{choice.name}.pt", pairs)
    text_done = not args.with_text or current(f"{choice.name}_text.pt", pairs[:1], text_queries(pairs[0], template=template))
    if ids_done and text_done:
        print(f"compute_id {choice.name}: 0 done, {len(pairs)} skipped, 0 failed (already extracted in {out} "
              "with this snapshot, dtype and layers)")
        return 0
    extractor = Extractor(choice, args.device, args.dtype)
    code = 0 if ids_done else compute_ids(extractor, args.image_dir, out, layers, args.batch_size, args.per_pair, template,
                                          args.shard)
    if not text_done:
        code = code or text_embeddings(extractor, args.image_dir, out, layers=layers, query_template=template)
    return code


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
