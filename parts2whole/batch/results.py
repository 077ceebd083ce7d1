"""What a batch did: one `LineResult` per line, results.jsonl (written by the driver, read by scripts) and
the `BatchSummary` that `run` returns."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

from .manifest import ManifestLine
from .store import OutputStore

RESULTS_FILE = "results.jsonl"
STATUS_OK, STATUS_ERROR = "ok", "error"
#: How the message of a line that failed for another reason than its input begins (a bug, the environment).
FAILED_PREFIX = "failed ("
#: How the message of every line of a worker whose model could not be loaded begins.
LOAD_FAILED_PREFIX = "the model could not be loaded"


@dataclasses.dataclass
class LineResult:
    """One line of results.jsonl."""

    id: str
    line: int
    status: str  # "ok" or "error"
    seconds: float
    message: str = ""
    outputs: list[str] = dataclasses.field(default_factory=list)
    encoded_references: bool = False  # True when this line ran the reference encoder (a cache miss)
    skipped: bool = False  # outputs were already complete: nothing was generated or written

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def bad_input(self) -> bool:
        """An error a person can fix in the manifest or its files (not a bug, not a model that failed to load)."""
        return not self.ok and not self.message.startswith((FAILED_PREFIX, LOAD_FAILED_PREFIX))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def error(cls, line: ManifestLine, message: str, seconds: float = 0.0) -> LineResult:
        """The error result of a manifest line."""
        return cls(id=line.id, line=line.number, status=STATUS_ERROR, seconds=seconds, message=message)


@dataclasses.dataclass
class BatchSummary:
    """What `run` did: every line's result, and the counts the CLI prints."""

    manifest: str
    out_dir: str
    engine: str
    results: list[LineResult]  # in manifest order; lines left for a later run (limit) are not in it
    lines: int  # lines in the manifest
    seconds: float
    workers: int = 1

    @property
    def ok(self) -> int:
        return sum(result.ok for result in self.results)

    @property
    def errors(self) -> list[LineResult]:
        return [result for result in self.results if not result.ok]

    @property
    def skipped(self) -> int:
        return sum(result.skipped for result in self.results)

    @property
    def generated(self) -> int:
        return sum(result.ok and not result.skipped for result in self.results)

    @property
    def encodes(self) -> int:
        """Reference encodings actually computed (studio cache misses), over all workers."""
        return sum(result.encoded_references for result in self.results)

    @property
    def left(self) -> int:
        """Lines not run this time (a `limit`); the next run does them."""
        return self.lines - len(self.results)

    @property
    def succeeded(self) -> bool:
        return not self.errors

    @property
    def only_bad_input(self) -> bool:
        """Every failed line failed on input a person can fix (the CLI's exit code 2, else 1)."""
        return all(result.bad_input for result in self.errors)

    @property
    def lines_per_minute(self) -> float:
        ran = len([result for result in self.results if not result.skipped])
        return ran / self.seconds * 60 if self.seconds > 0 else 0.0

    def describe(self) -> str:
        parts = [f"{_count(self.lines, 'line')}: {self.ok} ok", f"{len(self.errors)} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} already complete (skipped)")
        if self.left:
            parts.append(f"{self.left} left for the next run")
        return (f"{', '.join(parts)}. {_count(self.encodes, 'reference encode')} for "
                f"{_count(self.generated, 'generated line')} "
                f"({self.engine}, {self.workers} worker{'s' if self.workers != 1 else ''}, "
                f"{self.seconds:.1f} s). Results: {OutputStore(self.out_dir).path(RESULTS_FILE)}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def write_results(store: OutputStore, results: dict[int, LineResult]) -> None:
    """results.jsonl, in manifest order, replaced atomically."""
    text = "".join(json.dumps(results[number].to_dict()) + "\n" for number in sorted(results))
    store.write_bytes(RESULTS_FILE, text.encode("utf-8"))


def iter_results(out_dir: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """The records of `out_dir`/results.jsonl (for scripts that check a batch)."""
    text = OutputStore(out_dir).read_text(RESULTS_FILE) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
