"""`python -m parts2whole batch MANIFEST -o OUT_DIR`: the `batch` subcommand over `parts2whole.batch.run`,
its summary line and its exit code (0: no line failed; 2: lines had bad input; 1: a line failed otherwise)."""

from __future__ import annotations

import argparse

from .. import batch
from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

EXAMPLE_MANIFEST = "assets/lookbook.jsonl"

DESCRIPTION = """\
Generate many portraits from one manifest: JSON Lines (one object per line) or CSV (a header row), one
portrait per line. Keys are the web app's /generate parameters: face, face_mask, hair_or_headwear,
hair_or_headwear_mask, upper_body_clothes, ..., shoes, shoes_mask, pose, prompt, negative_prompt, seed,
steps, guidance, height, width, num_images, fusion_blocks, and an optional id. Paths are relative to the
manifest; missing keys take the defaults of `generate`.

Writes <id>.png (<id>_0.png, <id>_1.png, ... for several images) and <id>.json per line into OUT_DIR, and
results.jsonl (id, status ok/error, seconds, message). Run the same command again to finish an interrupted
batch: complete lines are skipped, nothing is rewritten. Lines with the same parts share one reference
encoding. Exit code: 0 when no line failed, 2 when lines had bad input, 1 when a line failed otherwise.
"""

EPILOG = f"""\
examples:
  %(prog)s {EXAMPLE_MANIFEST} -o outputs/lookbook --weights tiny
  %(prog)s shop.csv -o outputs/shop --engine ray                    # every GPU of this machine
  %(prog)s shop.csv -o s3://bucket/shop --engine ray --ray-address auto   # a Ray cluster
"""


def add_parser(commands) -> argparse.ArgumentParser:
    """The `batch` subcommand, added to the CLI's subparsers."""
    parser = commands.add_parser(
        "batch", help="generate many portraits from a manifest (JSON Lines or CSV), locally or on Ray",
        usage="%(prog)s MANIFEST -o OUT_DIR [--engine local|ray] [--ray-address ADDR] [options]",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest: .jsonl (or .json/.ndjson) or .csv")
    parser.add_argument("-o", "--output", "--out-dir", dest="out_dir", metavar="OUT_DIR", required=True,
                        help="folder for the outputs; with Ray on a cluster, a shared folder or an object-store "
                             "URL (s3://..., gs://...) that every node can write")
    parser.add_argument("--engine", choices=batch.ENGINES, default="local",
                        help="local: this process (default); ray: Ray Data actors, one per GPU")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="Ray cluster to join (e.g. auto, ray://head:10001); default: start Ray on this machine")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="Ray actors (default: one per GPU; one CPU actor on a CPU-only Ray)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="run at most N lines now, leave the rest for the next run")
    parser.add_argument("--weights", default=None,
                        help="Hub id, local folder, or 'tiny' (default: P2W_WEIGHTS, else the official weights)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary line")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the batch, print its summary line, and say by the exit code how it went."""
    summary = batch.run(args.manifest, args.out_dir, engine=args.engine, ray_address=args.ray_address,
                        weights=args.weights, device=args.device, dtype=args.dtype, workers=args.workers,
                        limit=args.limit, progress=not args.quiet)
    print(summary.describe())
    return exit_code(summary)


def exit_code(summary: batch.BatchSummary) -> int:
    if summary.succeeded:
        return EXIT_OK
    return EXIT_BAD_INPUT if summary.only_bad_input else EXIT_FAILED
