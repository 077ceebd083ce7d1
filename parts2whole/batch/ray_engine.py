"""The Ray engine: Ray Data, one block per part set (or slice of a big one), a callable class through
`map_batches` on an actor pool: one pipeline per actor, one GPU each (or CPU actors on a CPU-only Ray).

Ray and pandas are optional (requirements-ray.txt): they are imported only when this engine runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from ..core.errors import Parts2WholeInputError
from ..core.messages import one_line
from ..core.weights import FORWARDED_ENV_PREFIXES, forwarded_env  # noqa: F401 - the prefixes are re-exported
from .manifest import ManifestLine
from .results import LOAD_FAILED_PREFIX, LineResult
from .runner import Job, LineRunner

#: On a CPU-only Ray instance one CPU stays free for Ray Data's own tasks (else the pipeline can stall).
RAY_RESERVED_CPUS = 1
RAY_INSTALL_HINT = ('the Ray engine needs Ray: pip install -r requirements-ray.txt '
                    '(or pip install "parts2whole[ray]")')


def import_ray():
    """Ray with its Data library, or the one-line install hint."""
    try:
        import ray  # optional dependency (requirements-ray.txt)
        import ray.data  # noqa: F401 - the Data library is the part that is needed
    except ImportError:
        raise Parts2WholeInputError(RAY_INSTALL_HINT) from None
    return ray


def ray_blocks(groups: list[list[ManifestLine]], workers: int) -> list[list[ManifestLine]]:
    """The Dataset's blocks: one per part set, a big set cut into at most `workers` slices.

    One block is one `map_batches` batch, run by one actor, so a part set is encoded once per actor that
    gets a slice of it; slicing a set bigger than its share keeps every GPU busy when a manifest is one
    outfit on many poses (an encode costs about one denoising step, a line tens of them).
    """
    total = sum(len(group) for group in groups)
    share = max(1, math.ceil(total / max(1, workers)))
    blocks = []
    for group in groups:
        slices = math.ceil(len(group) / share)
        size = math.ceil(len(group) / slices)
        blocks.extend(group[start:start + size] for start in range(0, len(group), size))
    return blocks


class RayLineWorker:
    """The callable class Ray Data runs on each actor: one LineRunner (one pipeline) per actor."""

    def __init__(self, job: dict[str, Any], torch_threads: int | None = None):
        if torch_threads:
            import torch  # the actor's model needs torch anyway; the driver does not import it

            torch.set_num_threads(torch_threads)
        self.load_error: str | None = None
        try:
            self.runner = LineRunner(**job)
            self.runner.load()
        except Exception as error:  # noqa: BLE001 - every line of this actor reports it instead
            self.load_error = f"{LOAD_FAILED_PREFIX}: {one_line(error)[:500]}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = []
        for text in batch["line"]:
            line = ManifestLine.from_json(str(text))
            if self.load_error is not None:
                result = LineResult.error(line, self.load_error)
            else:
                result = self.runner.run(line)
            rows.append(result.to_dict())
        return {"result": [json.dumps(row) for row in rows]}



@dataclasses.dataclass
class ActorLayout:
    """How many actors, what each reserves, and how many torch threads each runs (CPU actors)."""

    actors: int
    remote_args: dict[str, Any]
    torch_threads: int | None = None


def actor_layout(resources: dict[str, float], device: str | None, workers: int | None) -> ActorLayout:
    """One actor per GPU (at most `workers`); on a CPU-only Ray, CPU actors sharing the CPUs Ray Data leaves."""
    gpus = 0 if (device or "").startswith("cpu") else int(resources.get("GPU", 0))
    if gpus:
        return ActorLayout(actors=min(workers or gpus, gpus), remote_args={"num_gpus": 1, "num_cpus": 1})
    actors = max(1, workers or 1)
    per_actor = max(1, (int(resources.get("CPU", 1)) - RAY_RESERVED_CPUS) // actors)
    return ActorLayout(actors=actors, remote_args={"num_cpus": per_actor}, torch_threads=per_actor)


def run_ray(job: Job, on_result: Callable[[LineResult], None], *, address: str | None,
            workers: int | None) -> int:
    """Ray Data: the work as a Dataset of lines, `map_batches` through RayLineWorker on an actor pool.

    Joins the Ray at `address`, or starts one here (and shuts it down after). Returns the actors used.
    """
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": forwarded_env()})
    try:
        layout = actor_layout(ray.cluster_resources(), job.device, workers)
        blocks = ray_blocks(job.groups, layout.actors)
        actors = max(1, min(layout.actors, len(blocks)))
        for result in _map_lines(ray, job, blocks, actors, layout):
            if not result.ok and job.progress:
                print(f"line {result.line} ({result.id}): error: {result.message}", file=sys.stderr)
            on_result(result)
        return actors
    finally:
        if started_here:
            ray.shutdown()


def _map_lines(ray, job: Job, blocks: list[list[ManifestLine]], actors: int, layout: ActorLayout):
    """The results of every line, as the actors finish them."""
    import pandas as pd  # comes with the optional Ray install; Ray Data builds its blocks from DataFrames

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = job.progress
    dataset = ray.data.from_pandas([pd.DataFrame({"line": [line.to_json() for line in block]}) for block in blocks])
    results = dataset.map_batches(
        RayLineWorker, fn_constructor_kwargs={"job": job.runner_settings(), "torch_threads": layout.torch_threads},
        batch_size=None, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        runtime_env={"env_vars": forwarded_env()}, **layout.remote_args)
    for row in results.iter_rows():
        yield LineResult(**json.loads(row["result"]))
