"""One device worker: a process owning one Studio (one pipeline on one device) that runs what its pool
sends, one request at a time, streaming progress back and polling the pool's Stop flag between steps.

Messages on the outbox are (kind, task id, payload) tuples: READY (payload: pid) once the model is loaded,
FAILED (payload: one line) when it cannot load, then PROGRESS (a ProgressUpdate), RESULT (what the studio
method returned) or ERROR (the exception, or a one-line RuntimeError when it cannot be pickled) per task.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle

from ..core.messages import one_line
from ..studio import ResolvedWeights, Studio

READY, FAILED, PROGRESS, RESULT, ERROR = "ready", "failed", "progress", "result", "error"
#: The cancel flag's value when no task is to be stopped (task ids start at 1).
NO_TASK = 0


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to build its studio (plain data: it crosses into a spawned process)."""

    device: str | None  # None: the best the process sees (a Ray replica sees its own GPU)
    weights: ResolvedWeights | str  # resolved once by the pool (workers never ask the Hub again); a
    # Ray replica on another machine gets the spec and resolves it there
    dtype: str | None = None
    cache_bytes: int | None = None
    torch_threads: int | None = None


def _resolved(weights: ResolvedWeights, _spec) -> ResolvedWeights:
    return weights


def build_studio(settings: WorkerSettings) -> Studio:
    """The worker's studio on its device, with the pool's resolved weights."""
    kwargs = {} if settings.cache_bytes is None else {"cache_bytes": settings.cache_bytes}
    if isinstance(settings.weights, str) or settings.weights is None:
        return Studio(settings.weights, device=settings.device, dtype=settings.dtype, **kwargs)
    return Studio(settings.weights.path, device=settings.device, dtype=settings.dtype,
                  resolver=functools.partial(_resolved, settings.weights), **kwargs)


def portable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling (the pool re-raises it), else its line."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any exception type may refuse pickling
        return RuntimeError(f"{type(error).__name__}: {one_line(error)}")


def worker_main(settings: WorkerSettings, inbox, outbox, cancel) -> None:
    """The worker process: load, say READY, then run tasks (task id, method name, request) until None."""
    if settings.torch_threads:
        import torch  # the worker's model needs torch anyway; set its threads before anything runs

        torch.set_num_threads(settings.torch_threads)
    try:
        studio = build_studio(settings)
        studio.pipeline()
    except Exception as error:  # noqa: BLE001 - the pool shows this line instead of a dead worker
        outbox.put((FAILED, None, one_line(error)[:500]))
        return
    outbox.put((READY, None, os.getpid()))
    while True:
        task = inbox.get()
        if task is None:
            return
        task_id, method, request = task
        outbox.put(_run(studio, task_id, method, request, outbox, cancel))


def _run(studio: Studio, task_id: int, method: str, request, outbox, cancel) -> tuple:
    def progress(update) -> None:
        outbox.put((PROGRESS, task_id, update))

    def cancelled() -> bool:
        return cancel.value == task_id

    try:
        return RESULT, task_id, getattr(studio, method)(request, progress=progress, cancelled=cancelled)
    except Exception as error:  # noqa: BLE001 - every failure goes back to the caller, the worker lives on
        return ERROR, task_id, portable(error)
