"""Tiny random-weight models of every family, built offline, for trying the pipeline without a hub (and for the tests).

    python dataengine/make_tiny_models.py --output-dir data/models --families depth_anything sam grounding_dino llava

Writes OUTPUT_DIR/{family}/ per family, saved with save_pretrained with the
family's real processor (the VLMs with a BPE tokenizer trained here and a chat
template in the family's format), loaded like any snapshot: --model DIR for
the front end, --model ALIAS=DIR for the spatial-ID tools. Their weights are
random: they show the plumbing, never quality. Family names are the
registries' (transformers' model types, with underscores).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchkit.cli import make_parser, run_cli  # noqa: E402
from dataengine.tiny_frontend import FAMILIES as FRONTEND_FAMILIES  # noqa: E402
from dataengine.tiny_frontend import build_tiny  # noqa: E402
from spatial_id.tiny import FAMILIES as VLM_FAMILIES  # noqa: E402
from spatial_id.tiny import build_tiny_model  # noqa: E402


def build_parser():
    p = make_parser(__doc__, __doc__.split("\n\n", 2)[2])
    p.add_argument("--output-dir", required=True, help="folder that gets one model folder per family")
    p.add_argument("--families", nargs="+", choices=list(FRONTEND_FAMILIES) + list(VLM_FAMILIES),
                   default=list(FRONTEND_FAMILIES) + ["llava"], help="which families (default: every front-end family and llava)")
    p.add_argument("--seed", type=int, default=0, help="weight seed (default %(default)s)")
    return p


def main(args):
    out = Path(args.output_dir)
    for family in args.families:
        if family in VLM_FAMILIES:
            build_tiny_model(family, out / family, seed=args.seed)
        else:
            build_tiny(family, out / family, seed=args.seed)
        print(f"make_tiny_models: tiny {family} (random weights) in {out / family}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
