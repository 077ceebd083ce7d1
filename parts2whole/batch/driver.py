"""`run`: one batch from manifest to OUT_DIR. Read the manifest, settle the lines that need no work, plan
the rest, run them on an engine (local or Ray) and keep results.jsonl up to date, also when interrupted."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..core.errors import Parts2WholeInputError
from .local_engine import run_local
from .manifest import read_manifest
from .plan import plan_work, settle
from .ray_engine import import_ray, run_ray
from .results import BatchSummary, LineResult, write_results
from .runner import Job
from .store import OutputStore

ENGINES = ("local", "ray")
#: results.jsonl is rewritten (atomically, in manifest order) at most this often while a batch runs, and at the end.
RESULTS_WRITE_INTERVAL_S = 2.0


def run(manifest: str | os.PathLike, out_dir: str | os.PathLike, *, engine: str = "local",
        ray_address: str | None = None, weights: str | None = None, device: str | None = None,
        dtype: str | None = None, workers: int | None = None, limit: int | None = None, group: bool = True,
        progress: bool = True, cache_bytes: int | None = None,
        on_result: Callable[[LineResult], None] | None = None) -> BatchSummary:
    """Generate every line of `manifest` into `out_dir`; rerun to finish an interrupted batch.

    - engine: "local" (this process, one pipeline) or "ray" (Ray Data actors: one per GPU, or CPU actors on
      a CPU-only Ray; `ray_address` joins a cluster, none starts Ray on this machine; `workers` caps actors).
    - Lines whose outputs are complete are skipped and nothing of theirs is rewritten; a bad line becomes an
      error result with its message and the batch goes on.
    - limit: run at most this many lines (in work order), leave the rest for the next run.
    - group: order the work by part set (default), so each set is encoded once per worker; False keeps the
      manifest's order (the benchmark's comparison).
    - cache_bytes: the studio's reference-cache budget per worker (default: the studio's).
    Returns a BatchSummary; results.jsonl in `out_dir` holds the same per-line results.
    """
    _check_options(engine, limit, workers)
    started = time.perf_counter()
    manifest_path = Path(manifest).expanduser().resolve() if Path(manifest).expanduser().exists() else Path(manifest)
    lines = read_manifest(manifest_path)
    store = OutputStore(out_dir)
    store.prepare()
    results, pending = settle(lines, store)
    groups = plan_work(pending, manifest_path.parent, group=group, limit=limit)
    if progress:
        _report_settled(results)
    job = Job(manifest=str(manifest_path), out_dir=str(out_dir), groups=groups, weights=weights, device=device,
              dtype=dtype, cache_bytes=cache_bytes, progress=progress)
    recorder = _Recorder(store, results, on_result)
    used = 1
    try:
        if job.lines and engine == "local":
            used = run_local(job, recorder.record)
        elif job.lines:
            used = run_ray(job, recorder.record, address=ray_address, workers=workers)
    finally:
        recorder.write()  # also when interrupted: what was done is on record
    return BatchSummary(manifest=str(manifest_path), out_dir=str(out_dir), engine=engine,
                        results=[results[number] for number in sorted(results)], lines=len(lines),
                        seconds=time.perf_counter() - started, workers=used)


def _check_options(engine: str, limit: int | None, workers: int | None) -> None:
    if engine not in ENGINES:
        raise Parts2WholeInputError(f"Unknown engine {engine!r}; use {' or '.join(ENGINES)}.")
    if limit is not None and limit < 0:
        raise Parts2WholeInputError(f"limit must be 0 or more, got {limit}.")
    if workers is not None and workers < 1:
        raise Parts2WholeInputError(f"workers must be 1 or more, got {workers}.")
    if engine == "ray":
        import_ray()  # say how to install it before anything else happens


def _report_settled(results: dict[int, LineResult]) -> None:
    """On stderr: the lines that cannot run, and how many were already complete."""
    for number in sorted(results):
        if not results[number].ok:
            print(f"line {number} ({results[number].id}): error: {results[number].message}", file=sys.stderr)
    skipped = sum(result.skipped for result in results.values())
    if skipped:
        print(f"{skipped} lines already complete: skipped.", file=sys.stderr)


class _Recorder:
    """Takes each line's result as it comes and rewrites results.jsonl every RESULTS_WRITE_INTERVAL_S."""

    def __init__(self, store: OutputStore, results: dict[int, LineResult],
                 on_result: Callable[[LineResult], None] | None):
        self.store, self.results, self.on_result = store, results, on_result
        self.last_write = time.monotonic()

    def record(self, result: LineResult) -> None:
        self.results[result.line] = result
        if self.on_result is not None:
            self.on_result(result)
        if time.monotonic() - self.last_write >= RESULTS_WRITE_INTERVAL_S:
            self.write()

    def write(self) -> None:
        write_results(self.store, self.results)
        self.last_write = time.monotonic()
