"""What every subcommand of `python -m parts2whole` shares: the exit codes, the program name, the parser
whose usage mistakes are one line, and the check that an output folder takes files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..core.errors import Parts2WholeInputError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: Set to 1 to get the full traceback of an unexpected failure (by default: one line).
DEBUG_ENV = "P2W_DEBUG"
PROG = "python -m parts2whole"


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is a single line on stderr (exit code 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def cannot_write(output: Path, error: OSError) -> Parts2WholeInputError:
    """The one-line error for an output file that could not be written."""
    return Parts2WholeInputError(f"Cannot write {output} ({error.strerror or error}); choose another -o path.")


def check_writable_folder(output: Path) -> None:
    """Create the folder of `output` and check it takes files: before a long model load, not after."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise cannot_write(output, error) from None
    if not os.access(output.parent, os.W_OK):
        raise Parts2WholeInputError(f"Cannot write into {output.parent} (no permission); choose another -o path.")
