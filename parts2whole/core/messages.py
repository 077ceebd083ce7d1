"""Error messages as people read them: one line, whatever the exception's text holds.

The command line prints them on stderr and a batch records them in results.jsonl, so both use this.
"""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """The error's text with every run of whitespace (newlines included) made one space."""
    return " ".join(str(error).split())
