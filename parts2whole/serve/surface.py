"""The calling surface a pool or a Ray Serve handle shares with `Studio`, so the UI needs no other code.

What describes the model (weights, banner, the tiny flag, the pose map kind) comes from a local studio
that never loads a pipeline here; the request methods named in FORWARDED_METHODS (`generate` and `edit`,
each `Studio.<name>(request, progress=..., cancelled=...)`) run remotely: the request is validated once here, so bad input fails fast with its message, and then trusted there.
"""

from __future__ import annotations

from collections.abc import Callable

from ..studio import GenerationRequest, ProgressCallback, Studio

#: Studio methods that take (request, progress, cancelled) and run on a worker. Add a name to forward one.
FORWARDED_METHODS = ("generate", "edit")
#: What the person reads (in the status line) when their generation was run again elsewhere.
RETRY_NOTE = "A worker stopped during this generation, so it was run again on another one (hence the wait)."
#: Attempts per request: the first, and one retry on another worker when the first one dies.
ATTEMPTS = 2


class ServiceUnavailable(RuntimeError):
    """No worker can take the request (all down, or the queue is full); the message says what to do."""


class RemoteStudio:
    """A studio whose request methods run elsewhere. Subclasses implement `call(method, request, ...)`."""

    def __init__(self, local: Studio):
        self.local = local

    def __getattr__(self, name: str):
        if name in FORWARDED_METHODS:
            def forwarded(request: GenerationRequest, progress: ProgressCallback | None = None,
                          cancelled: Callable[[], bool] | None = None):
                return self.call(name, request, progress=progress, cancelled=cancelled)

            forwarded.__name__ = name
            return forwarded
        if name == "local":  # not set yet (during unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.local, name)  # weights, banner(), is_tiny, structure_kind(), device_choice...

    @property
    def is_loaded(self) -> bool:
        return False  # the pipelines live in the workers; the local studio answers from the checkpoint

    @property
    def workers(self) -> int:
        """How many generations run at once (the Gradio queue's GPU concurrency)."""
        raise NotImplementedError

    def call(self, method: str, request: GenerationRequest, *, progress: ProgressCallback | None = None,
             cancelled: Callable[[], bool] | None = None):
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (the app calls it when it stops)."""
