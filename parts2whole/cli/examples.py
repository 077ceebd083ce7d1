"""`python -m parts2whole examples fetch|list`: the app's photo examples, prefetched into the cache or shown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import examples
from ..core.errors import Parts2WholeInputError
from ..core.messages import one_line
from .common import EXIT_FAILED, EXIT_OK, PROG, OneLineErrorParser


def add_parser(commands) -> argparse.ArgumentParser:
    """`examples fetch [--count N]` and `examples list`, added to the CLI's subparsers."""
    group = commands.add_parser(
        "examples", help="fetch or list the photo examples (test samples of the Parts2Whole dataset)",
        description=f"Photo examples for the app: {examples.DEFAULT_EXAMPLE_COUNT} test samples of {examples.DATASET_ID} "
                    f"(parts, masks, DensePose map, caption, real photo) and {examples.DEFAULT_POSE_COUNT} DensePose "
                    "maps for the pose gallery, read member by member from the dataset's zip archives and cached "
                    "under <weights>/examples (P2W_WEIGHTS_DIR, or P2W_EXAMPLES_DIR).")
    actions = group.add_subparsers(dest="examples_command", metavar="ACTION", parser_class=OneLineErrorParser,
                                   required=True)
    fetch = actions.add_parser("fetch", help="fetch the selection into the cache (prepares offline machines, images)")
    fetch.add_argument("--count", type=int, default=examples.DEFAULT_EXAMPLE_COUNT,
                       help=f"examples (default {examples.DEFAULT_EXAMPLE_COUNT})")
    fetch.add_argument("--poses", type=int, default=examples.DEFAULT_POSE_COUNT,
                       help=f"pose gallery maps (default {examples.DEFAULT_POSE_COUNT})")
    fetch.add_argument("--source", default=None, metavar="DIR",
                       help="read a local copy of the dataset (a folder with test.jsonl and the zips) instead of the Hub")
    listing = actions.add_parser("list", help="print what is cached")
    for action in (fetch, listing):
        action.add_argument("--revision", default=examples.DATASET_REVISION,
                            help=f"dataset commit (default: the pinned {examples.DATASET_REVISION[:12]})")
        action.add_argument("--cache", default=None, help="cache folder (default: <weights>/examples)")
    fetch.set_defaults(handler=run_fetch)
    listing.set_defaults(handler=run_list)
    return group


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch the selection (from the Hub or a local copy) into the cache, then print it."""
    if args.count < 1 or args.poses < 0:
        raise Parts2WholeInputError("--count must be at least 1 and --poses at least 0.")
    fs, root = None, None
    if args.source:
        if not Path(args.source).is_dir():
            raise Parts2WholeInputError(f"--source {args.source}: no such folder.")
        fs, root = examples.local_file_system(args.source)
    try:
        manifest = examples.fetch_examples(fs, root, revision=args.revision, count=args.count, poses=args.poses,
                                           cache_root=_cache_root(args), progress=lambda line: print(line, file=sys.stderr))
    except examples.ExampleFetchError as error:
        print(f"{PROG} examples fetch: failed: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    for note in manifest.notes:
        print(f"note: {note}", file=sys.stderr)
    _print_manifest(manifest)
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    """Print what is cached (or how to fetch it)."""
    folder = examples.cache_folder(args.revision, _cache_root(args))
    manifest = examples.load_manifest(folder)
    if manifest is None:
        print(f"No photo examples cached in {folder} (run: {PROG} examples fetch).")
        return EXIT_OK
    _print_manifest(manifest)
    return EXIT_OK


def _cache_root(args: argparse.Namespace) -> Path | None:
    return Path(args.cache) if args.cache else None


def _print_manifest(manifest) -> None:
    print(f"{manifest.dataset}@{manifest.revision} in {manifest.folder} (fetched {manifest.fetched_at})")
    print(f"{len(manifest.examples)} examples:")
    for example in manifest.examples:
        print(f"  {example.sample_id:<48} {example.title}; parts: {', '.join(example.parts)}")
    print(f"{len(manifest.poses)} poses:")
    for pose in manifest.poses:
        print(f"  {pose.sample_id:<48} {pose.label}")
    for line in examples.format_transfer(manifest.transfer):
        print(line)
