"""Command line: `python -m parts2whole COMMAND ...`, one module per subcommand:

- generate (cli/generate.py): `generate --face F.png --pose P.png --prompt "..." -o out.png`
- edit (cli/edit.py): `edit PHOTO --change shoes --shoes new.jpg -o out.png`, change parts of a photo
- pose (cli/pose.py): `pose PHOTO -o MAP.png`, a DensePose or OpenPose-style map made from a photo
- examples (cli/examples.py): `examples fetch|list`, the app's photo examples
- batch (cli/batch.py): `batch MANIFEST -o OUT_DIR`, many portraits from a manifest

It drives the same `Studio` as the web app, so the defaults, checks and parameters JSON are the same.
Input a person can fix ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..core.errors import CheckpointError, Parts2WholeInputError
from ..core.messages import one_line
from . import batch, edit, examples, generate, pose
from .common import (DEBUG_ENV, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401 - re-exported
                     PROG, OneLineErrorParser)
from .generate import DEFAULT_OUTPUT, OPTION_ALIASES, option_name  # noqa: F401 - re-exported

__all__ = ["DEBUG_ENV", "DEFAULT_OUTPUT", "EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_OK", "PROG", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every subcommand's parser, each with its handler."""
    parser = OneLineErrorParser(
        prog=PROG, description="Parts2Whole: full-body portraits from reference images of a person's parts.",
        epilog=f"Start with: {PROG} generate --help   (the web app: python app.py)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    generate.add_parser(commands)
    edit.add_parser(commands)
    pose.add_parser(commands)
    examples.add_parser(commands)
    batch.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit code (0 ok, 1 failed, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s")
    try:
        return args.handler(args)
    except (Parts2WholeInputError, CheckpointError) as error:
        print(f"{PROG} {args.command}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug or an environment problem: one line, the traceback on request
        if os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}:
            raise
        print(f"{PROG} {args.command}: failed ({type(error).__name__}): {one_line(error)[:500]} "
              f"(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return EXIT_FAILED
