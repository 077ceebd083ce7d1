"""The Ray Serve deployment: one studio per replica (one GPU each on a GPU cluster), routed by part set
with Ray Serve's model multiplexing, streaming progress, stopped by the caller's cancel.

Written as the Ray Serve docs write a multiplexed deployment: `@serve.deployment` on the class, an async
`@serve.multiplexed` loader, and the request method reading `serve.get_multiplexed_model_id()` and awaiting
the loader. The "model" of a multiplexed id is only a token: the encoding itself lives in the replica
studio's byte-bounded reference cache, keyed by content. Serve keeps the LRU of tokens per replica
(MAX_PART_SETS_PER_WORKER, sized from the cache's bytes: see affinity.py) and prefers replicas holding a
token; a miss (the token or the encoding evicted, the warm replica busy, a new replica) just encodes the
references again on whichever replica runs it.

Data flow of `call`: the studio method runs in a thread; its progress and its answer cross into the async
generator through an asyncio queue, each yielded to the caller as (kind, payload). When the caller cancels
(Stop), Ray Serve cancels the generator: `finally` sets the stop flag the studio polls every step.
"""

from __future__ import annotations

import asyncio
import os
import threading

from ray import serve  # this module is the Ray Serve deployment: imported only with `--engine ray`

from .affinity import MAX_PART_SETS_PER_WORKER
from .worker import ERROR, PROGRESS, RESULT, WorkerSettings, build_studio, portable

#: Requests one replica takes at once: one (one pipeline per device; the studio runs one at a time).
#: Serve's multiplexing tries the replicas holding an id first and goes to another when they are full, so
#: a re-generation lands on its warm replica when that one is free. (Letting a replica take a second,
#: waiting request raised the trace's hit rate, but two simultaneous requests then sometimes queued on one
#: replica while the other sat idle: Serve's router had not yet seen the first one's load.)
MAX_ONGOING_PER_REPLICA = 1
#: Requests waiting for a replica before new ones are refused with "busy" (the app's own queue is 32 long).
MAX_QUEUED_REQUESTS = 32
STARTED = "started"


class PartSet:
    """A multiplexed "model": the token saying this replica has (probably) encoded a part set."""

    def __init__(self, key: str):
        self.key = key


@serve.deployment(ray_actor_options={"num_gpus": 1}, max_ongoing_requests=MAX_ONGOING_PER_REPLICA,
                  max_queued_requests=MAX_QUEUED_REQUESTS)
class StudioDeployment:
    """One replica: a studio on the replica's device, loaded before it takes requests."""

    def __init__(self, settings: WorkerSettings):
        if settings.torch_threads:
            import torch  # the replica's model needs torch anyway; set its threads before anything runs

            torch.set_num_threads(settings.torch_threads)
        self.studio = build_studio(settings)
        self.studio.pipeline()
        self.counts = {"generations": 0, "cache_hits": 0, "stopped": 0}

    @serve.multiplexed(max_num_models_per_replica=MAX_PART_SETS_PER_WORKER)
    async def part_set(self, key: str) -> PartSet:
        return PartSet(key)

    async def call(self, method: str, request):
        """Run `Studio.<method>(request)`: yields (STARTED, who), (PROGRESS, update)..., then the answer."""
        key = serve.get_multiplexed_model_id()
        if key:  # a caller routing by part set (every front end here does; the bench's baseline does not)
            await self.part_set(key)
        loop, events, stop = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        def progress(update) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (PROGRESS, update))

        def run() -> None:
            try:
                answer = (RESULT, getattr(self.studio, method)(request, progress=progress, cancelled=stop.is_set))
            except Exception as error:  # noqa: BLE001 - every failure goes back to the caller
                answer = (ERROR, portable(error))
            loop.call_soon_threadsafe(events.put_nowait, answer)

        yield STARTED, self.identity()
        loop.run_in_executor(None, run)
        kind = PROGRESS
        try:
            while True:
                kind, payload = await events.get()
                if kind == RESULT:
                    self.counts["generations"] += 1
                    self.counts["cache_hits"] += bool(getattr(payload, "reused_references", False))
                yield kind, payload
                if kind != PROGRESS:
                    return
        finally:
            if not stop.is_set() and kind == PROGRESS:  # left before the answer: the caller cancelled
                self.counts["stopped"] += 1
            stop.set()

    def identity(self) -> dict:
        return {"replica": serve.get_replica_context().replica_id.unique_id, "pid": os.getpid()}

    def stats(self) -> dict:
        return self.identity() | self.counts
