"""The local engine: one Studio in this process, the lines one after the other, with a progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm.auto import tqdm

from .results import LineResult
from .runner import Job


def run_local(job: Job, on_result: Callable[[LineResult], None]) -> int:
    """In this process: one pipeline, line after line, with a progress bar (lines, lines/min, ETA, encodes).

    Returns the number of workers used (1).
    """
    runner = job.runner()
    runner.load()  # a model that cannot load stops the batch here, with its one-line message
    bar = tqdm(total=job.lines, unit="line", disable=not job.progress, file=sys.stderr, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} lines [{elapsed}<{remaining}{postfix}]")
    encodes = 0
    with bar:
        for group in job.groups:
            for line in group:
                result = runner.run(line)
                encodes += result.encoded_references
                if not result.ok:
                    bar.write(f"line {result.line} ({result.id}): error: {result.message}", file=sys.stderr)
                on_result(result)
                bar.update(1)
                elapsed = bar.format_dict["elapsed"]
                per_minute = bar.n / elapsed * 60 if elapsed > 0 else 0.0
                bar.set_postfix_str(f"{per_minute:.1f} lines/min, {encodes} encodes", refresh=True)
    return 1
