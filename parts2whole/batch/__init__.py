"""Batch lookbooks: many portraits from one manifest, in this process or on a Ray cluster.

`python -m parts2whole batch MANIFEST -o OUT_DIR [--engine local|ray]` (the CLI's `batch` subcommand) and
`run(manifest, out_dir)`.

Data flow (one way), one module per step:

    MANIFEST (JSON Lines or CSV)
      -> manifest.read_manifest  one ManifestLine per line: its id, values, content key, or the error that stops it
      -> plan                    lines whose outputs are complete are skipped (nothing is rewritten); the rest are
                                 grouped by part set (`part_set_key`) so each set is encoded once per worker
      -> engine                  local_engine: one Studio in this process, line after line (tqdm progress bar)
                                 ray_engine:   Ray Data, one block per group (or slice of a big group), a callable
                                               class through `map_batches` on an actor pool: one pipeline per
                                               actor, one GPU each
      -> runner.LineRunner       per line: manifest values -> studio.inputs.GenerationInputs -> load_request
                                 (validated once) -> Studio.generate (the studio's reference cache does the
                                 sharing) -> images + JSON
      -> store.OutputStore       OUT_DIR: <id>.png (<id>_<k>.png for several) and <id>.json, written atomically,
                                 JSON last; results.jsonl (id, status, seconds, message), written by the driver

A line's outputs are complete when its JSON exists, parses, names this very line (its content key) and every
image it lists exists: an interrupted line has no JSON yet, so it is made again on the next run.

Manifest keys are the web app's `/generate` parameter names (one vocabulary for the app, the API client and
batches); the values and defaults are those of `python -m parts2whole generate`, and each bad line gets the
one-line message `generate` would print for it. This package imports core and studio only, never the CLI.
"""

from __future__ import annotations

from .driver import ENGINES, RESULTS_WRITE_INTERVAL_S, run
from .manifest import (CSV_SUFFIXES, ENCODING_SETTING_KEYS, FILE_KEYS, HASH_ID_DIGITS, ID_PATTERN, JSONL_SUFFIXES,
                       MANIFEST_KEYS, MASK_KEYS, PART_KEYS, SETTING_KEYS, ManifestLine, content_key, line_inputs,
                       read_manifest, resolve_path)
from .plan import first_lines, group_by_part_set, part_set_key, plan_work, settle
from .ray_engine import FORWARDED_ENV_PREFIXES, RAY_INSTALL_HINT, RAY_RESERVED_CPUS, RayLineWorker, ray_blocks
from .results import (RESULTS_FILE, STATUS_ERROR, STATUS_OK, BatchSummary, LineResult, iter_results,
                      write_results)
from .runner import Job, LineRunner
from .store import TEMPORARY_MARKER, OutputStore, completed_outputs

__all__ = [
    "BatchSummary", "CSV_SUFFIXES", "ENCODING_SETTING_KEYS", "ENGINES", "FILE_KEYS", "FORWARDED_ENV_PREFIXES",
    "HASH_ID_DIGITS", "ID_PATTERN", "JSONL_SUFFIXES", "Job", "LineResult", "LineRunner", "MANIFEST_KEYS",
    "MASK_KEYS", "ManifestLine", "OutputStore", "PART_KEYS", "RAY_INSTALL_HINT", "RAY_RESERVED_CPUS",
    "RESULTS_FILE", "RESULTS_WRITE_INTERVAL_S", "RayLineWorker", "SETTING_KEYS", "STATUS_ERROR", "STATUS_OK",
    "TEMPORARY_MARKER", "completed_outputs", "content_key", "first_lines", "group_by_part_set", "iter_results",
    "line_inputs", "part_set_key", "plan_work", "ray_blocks", "read_manifest", "resolve_path", "run", "settle",
    "write_results",
]
