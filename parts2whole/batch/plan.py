"""Which lines a run makes, and in what order: lines that cannot run or whose outputs are complete are
settled first (nothing of theirs is rewritten); the rest are grouped by part set (`part_set_key`), so each
set is encoded once per worker, and cut at a `limit`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .manifest import ENCODING_SETTING_KEYS, MASK_KEYS, PART_KEYS, ManifestLine, canonical_value, resolve_path
from .results import STATUS_OK, LineResult
from .store import OutputStore, completed_outputs


def settle(lines: list[ManifestLine], store: OutputStore) -> tuple[dict[int, LineResult], list[ManifestLine]]:
    """The results of the lines that need no work (by line number), and the lines that do, in manifest order.

    A line that cannot run gets its error; a line whose outputs are complete is skipped; a line whose
    `<id>.json` was made from another line is an error (its outputs are left alone).
    """
    results: dict[int, LineResult] = {}
    pending: list[ManifestLine] = []
    for line in lines:
        if line.error is not None:
            results[line.number] = LineResult.error(line, line.error)
            continue
        state, outputs = completed_outputs(store, line)
        if state == "complete":
            results[line.number] = LineResult(id=line.id, line=line.number, status=STATUS_OK, seconds=0.0,
                                              message="already complete: skipped", outputs=outputs, skipped=True)
        elif state == "other":
            results[line.number] = LineResult.error(
                line, f"line {line.number}: {store.path(line.id + '.json')} was made from a different line; "
                      "delete its outputs to make them again, or give this line another id.")
        else:
            pending.append(line)
    return results, pending


def part_set_key(line: ManifestLine, manifest_dir: Path, digests: dict[Path, str] | None = None) -> str:
    """What the reference encoding of a line depends on, read cheaply from the files (bytes, not pixels).

    The studio's cache keys by decoded pixels (`studio.reference_key`); files with the same bytes have the
    same pixels, so lines with the same key here share one encoding there. Used only to order the work.
    """
    digests = {} if digests is None else digests
    hasher = hashlib.sha256()
    for key in ENCODING_SETTING_KEYS:
        hasher.update(f"{key}={canonical_value(line.values.get(key, ''))}|".encode())
    for key in (*PART_KEYS, *MASK_KEYS):
        if key not in line.values:
            continue
        path = resolve_path(line.values[key], manifest_dir).resolve()
        if path not in digests:
            try:
                digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                digests[path] = f"unreadable:{path}"  # the line will fail with the loader's message
        hasher.update(f"{key}={digests[path]}|".encode())
    return hasher.hexdigest()


def group_by_part_set(lines: list[ManifestLine], manifest_dir: Path) -> list[list[ManifestLine]]:
    """Lines with the same parts together, groups in order of first appearance, lines in manifest order."""
    digests: dict[Path, str] = {}
    groups: dict[str, list[ManifestLine]] = {}
    for line in lines:
        groups.setdefault(part_set_key(line, manifest_dir, digests), []).append(line)
    return list(groups.values())


def plan_work(pending: list[ManifestLine], manifest_dir: Path, *, group: bool = True,
              limit: int | None = None) -> list[list[ManifestLine]]:
    """The work in the order it should run: by part set (or one line per group, in manifest order), and at
    most `limit` lines."""
    groups = group_by_part_set(pending, manifest_dir) if group else [[line] for line in pending]
    return groups if limit is None else first_lines(groups, limit)


def first_lines(groups: list[list[ManifestLine]], limit: int) -> list[list[ManifestLine]]:
    """The first `limit` lines of the work, in work order."""
    kept, left = [], limit
    for group in groups:
        if left <= 0:
            break
        kept.append(group[:left])
        left -= len(kept[-1])
    return kept
