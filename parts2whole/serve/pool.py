"""A pool of device workers on one machine: one spawned process per device (so one that dies cannot take
the others), each with its own pipeline and reference cache; requests routed by part set (affinity.py).

Data flow of one call: the front door's thread validates the request, the router picks a worker, the
task goes to that worker's inbox; its reader thread hands PROGRESS/RESULT/ERROR messages to the waiting
call, which forwards progress and polls Stop (a shared per-worker value naming the task to stop). A
worker that dies fails its tasks with `WorkerLost`; each is run once more on another worker (with a note),
and the dead worker is started again in the background.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable

from ..core.errors import GenerationCancelled
from ..studio import GenerationRequest, ProgressCallback, Studio
from .affinity import AffinityRouter, part_set_key
from .surface import ATTEMPTS, RETRY_NOTE, RemoteStudio, ServiceUnavailable
from .worker import ERROR, FAILED, NO_TASK, PROGRESS, READY, RESULT, WorkerSettings, worker_main

logger = logging.getLogger("parts2whole.serve")

#: How often a waiting call and a reader thread look at Stop and at the worker's process (seconds).
POLL_S = 0.1
#: How long `start` waits for every worker's model to load before serving with the ready ones.
READY_TIMEOUT_S = 600.0
#: Seconds a worker gets to exit after being asked, before it is terminated.
STOP_GRACE_S = 5.0
DIED = "died"


class WorkerLost(RuntimeError):
    """The worker running a task died before answering."""


class _Worker:
    """One device's process, its queues, and the tasks sent to it (front-side bookkeeping)."""

    def __init__(self, index: int, settings: WorkerSettings, context):
        self.index, self.settings = index, settings
        self.inbox, self.outbox = context.Queue(), context.Queue()
        self.cancel = context.Value("q", NO_TASK)
        self.process = context.Process(target=worker_main, args=(settings, self.inbox, self.outbox, self.cancel),
                                       name=f"p2w-worker-{index}-{settings.device}", daemon=True)
        self.ready = threading.Event()
        self.alive = True
        self.failure: str | None = None
        self.pid: int | None = None
        self.tasks: dict[int, queue.Queue] = {}
        self.generations = self.cache_hits = 0


class DevicePool(RemoteStudio):
    """Concurrent generations, one per device; the calling surface of `Studio` (see surface.py)."""

    def __init__(self, devices: list[str], weights: str | None = None, *, dtype: str | None = None,
                 cache_bytes: int | None = None, affinity: bool = True, local: Studio | None = None,
                 torch_threads: int | None = None):
        super().__init__(local or Studio(weights, device=devices[0], dtype=dtype))
        cpu_workers = sum(device.startswith("cpu") for device in devices)
        threads = torch_threads or (max(1, (os.cpu_count() or 1) // cpu_workers) if cpu_workers else None)
        self._settings = [WorkerSettings(device=device, weights=self.local.weights, dtype=dtype,
                                         cache_bytes=cache_bytes, torch_threads=threads if device.startswith("cpu") else None)
                          for device in devices]
        self._context = multiprocessing.get_context("spawn")  # CUDA cannot be forked; a clean process each
        self._router = AffinityRouter(len(devices), affinity=affinity)
        self._task_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._workers = [self._spawn(index) for index in range(len(devices))]
        self.restarts = 0

    @property
    def workers(self) -> int:
        return len(self._workers)

    def _spawn(self, index: int) -> _Worker:
        worker = _Worker(index, self._settings[index], self._context)
        worker.process.start()
        threading.Thread(target=self._read, args=(worker,), name=f"p2w-pool-reader-{index}", daemon=True).start()
        return worker

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> int:
        """Wait until every worker has loaded (or failed); returns how many are ready."""
        for worker in list(self._workers):
            worker.ready.wait(timeout)
        ready = [worker for worker in self._workers if worker.alive and worker.ready.is_set()]
        for worker in self._workers:
            if worker.failure:
                logger.warning("Worker %d (%s) could not load: %s", worker.index, worker.settings.device, worker.failure)
        return len(ready)

    # -- the reader side

    def _read(self, worker: _Worker) -> None:
        """Hand the worker's messages to the waiting calls; notice when its process is gone."""
        while not self._closed:
            try:
                kind, task_id, payload = worker.outbox.get(timeout=POLL_S)
            except queue.Empty:
                if not worker.process.is_alive():
                    self._lost(worker)
                    return
                continue
            except (EOFError, OSError):
                self._lost(worker)
                return
            if kind == READY:
                worker.pid = payload
                worker.ready.set()
            elif kind == FAILED:
                worker.failure, worker.alive = payload, False
                worker.ready.set()
                return
            elif task_id in worker.tasks:
                worker.tasks[task_id].put((kind, payload))

    def _lost(self, worker: _Worker) -> None:
        """The worker's process died: fail its tasks (they are retried) and start it again."""
        with self._lock:
            loaded = worker.ready.is_set()
            worker.alive = False
            worker.ready.set()
            for events in list(worker.tasks.values()):
                events.put((DIED, None))
            self._router.forget(worker.index)
            if self._closed or self._workers[worker.index] is not worker:
                return
            if not loaded:  # it died while loading (out of memory, a broken driver): starting it again would loop
                worker.failure = f"the worker on {worker.settings.device} died while loading (exit code " \
                                 f"{worker.process.exitcode})"
                return
            logger.warning("Worker %d (%s) died (exit code %s); starting it again.", worker.index,
                           worker.settings.device, worker.process.exitcode)
            self.restarts += 1
            self._workers[worker.index] = self._spawn(worker.index)

    # -- the calling side

    def call(self, method: str, request: GenerationRequest, *, progress: ProgressCallback | None = None,
             cancelled: Callable[[], bool] | None = None):
        """Run `Studio.<method>(request)` on a worker: validated here, routed by part set, retried once."""
        request = request.validated()
        key = part_set_key(request)
        tried: set[int] = set()
        for attempt in range(ATTEMPTS):
            worker = self._pick(key, tried)
            tried.add(worker.index)
            try:
                result = self._run_on(worker, method, request, progress, cancelled)
            except WorkerLost:
                if attempt + 1 == ATTEMPTS:
                    raise ServiceUnavailable("The device workers stopped twice during this generation; "
                                             "please try again in a minute (your inputs are still here).") from None
                logger.warning("Worker %d died during a generation; running it again elsewhere.", worker.index)
                continue
            if attempt:
                getattr(result, "notes", []).append(RETRY_NOTE)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _pick(self, key: str, tried: set[int]) -> _Worker:
        with self._lock:
            alive = [worker.index for worker in self._workers if worker.alive]
            usable = [index for index in alive if index not in tried] or alive
            index = self._router.pick(key, usable)
            if index is None:
                failures = "; ".join(sorted({worker.failure for worker in self._workers if worker.failure}))
                raise ServiceUnavailable("No device worker is running" + (f" ({failures})" if failures else "")
                                         + "; please try again in a minute (your inputs are still here).")
            return self._workers[index]

    def _run_on(self, worker: _Worker, method: str, request: GenerationRequest,
                progress: ProgressCallback | None, cancelled: Callable[[], bool] | None):
        task_id, events = next(self._task_ids), queue.Queue()
        worker.tasks[task_id] = events
        try:
            if not worker.alive:
                raise WorkerLost()
            worker.inbox.put((task_id, method, request))
            result = self._wait(worker, task_id, events, progress, cancelled)
            worker.generations += 1
            worker.cache_hits += bool(getattr(result, "reused_references", False))
            return result
        finally:
            worker.tasks.pop(task_id, None)
            self._router.done(worker.index)

    @staticmethod
    def _wait(worker: _Worker, task_id: int, events: queue.Queue, progress, cancelled):
        """Forward progress until the answer; a Stop sets the worker's flag, which it polls every step."""
        while True:
            if cancelled is not None and worker.cancel.value != task_id and cancelled():
                worker.cancel.value = task_id
            try:
                kind, payload = events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == PROGRESS and progress is not None:
                progress(payload)
            elif kind == RESULT:
                return payload
            elif kind == ERROR:
                raise payload
            elif kind == DIED:
                if worker.cancel.value == task_id:
                    raise GenerationCancelled("The generation was stopped.")
                raise WorkerLost()

    # -- looking at it, stopping it

    def stats(self) -> list[dict]:
        """Per worker: device, pid, alive, in-flight requests, generations, reference-cache hits."""
        return [{"index": w.index, "device": w.settings.device, "pid": w.pid, "alive": w.alive,
                 "busy": self._router.busy[w.index], "generations": w.generations, "cache_hits": w.cache_hits}
                for w in self._workers]

    def close(self) -> None:
        self._closed = True
        for worker in self._workers:
            if worker.alive:
                worker.inbox.put(None)
        for worker in self._workers:
            worker.process.join(STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(STOP_GRACE_S)

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
