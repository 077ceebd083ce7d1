"""The front end's side of Ray Serve: starts (or joins) Ray, deploys StudioDeployment with no HTTP
ingress of its own, and calls it through a handle with the Studio calling surface (surface.py).

Each call streams from one replica: `multiplexed_model_id` is the request's part set key, so Serve prefers
the replica that encoded it; progress arrives as it happens; Stop cancels the stream, which stops the
replica's generation at its next step. A replica that dies mid-call is retried once on another (a note
says so); no replica at all, or a full queue, is one ServiceUnavailable line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..core.errors import GenerationCancelled, Parts2WholeInputError
from ..core.messages import one_line
from ..core.weights import forwarded_env
from ..studio import GenerationRequest, ProgressCallback, Studio
from .affinity import part_set_key
from .surface import ATTEMPTS, RETRY_NOTE, RemoteStudio, ServiceUnavailable
from .worker import ERROR, PROGRESS, RESULT, WorkerSettings

logger = logging.getLogger("parts2whole.serve")

RAY_SERVE_INSTALL_HINT = ('--engine ray needs Ray Serve: pip install -r requirements-ray.txt '
                          '(or pip install "parts2whole[ray]")')
#: The Serve application's name on the cluster (one per app; a second app start replaces it).
APP_NAME = "parts2whole"
#: Seconds `serve.run` may take to bring the replicas up (each loads a model).
DEPLOY_TIMEOUT_S = 900


def import_ray_serve():
    """(ray, ray.serve), or the one-line install hint."""
    try:
        import ray  # optional dependency (requirements-ray.txt)
        from ray import serve
    except ImportError:
        raise Parts2WholeInputError(RAY_SERVE_INSTALL_HINT) from None
    return ray, serve


def replica_options(resources: dict[str, float], device: str | None, min_replicas: int | None,
                    max_replicas: int | None) -> dict:
    """Deployment options: one GPU per replica where the cluster has GPUs (else CPU replicas sharing its
    CPUs), a fixed count or autoscaling between min and max replicas (default: one per GPU, one on CPU)."""
    gpus = 0 if (device or "").startswith("cpu") else int(resources.get("GPU", 0))
    low = min_replicas or max_replicas or gpus or 1
    high = max(max_replicas or low, low)
    if gpus:
        actor = {"num_gpus": 1}
    else:
        actor = {"num_gpus": 0, "num_cpus": max(1, int(resources.get("CPU", 1)) // high)}
    actor["runtime_env"] = {"env_vars": forwarded_env()}
    scale = {"num_replicas": low} if low == high else {"autoscaling_config": {"min_replicas": low, "max_replicas": high}}
    return {"ray_actor_options": actor, **scale}


class RayStudio(RemoteStudio):
    """Studio calls through a Ray Serve handle; `address` joins a running Ray ("auto" or host:port)."""

    def __init__(self, weights: str | None = None, *, address: str | None = None, device: str | None = None,
                 dtype: str | None = None, min_replicas: int | None = None, max_replicas: int | None = None,
                 local: Studio | None = None, cache_bytes: int | None = None, affinity: bool = True):
        super().__init__(local or Studio(weights, device="cpu", dtype=dtype))
        self.affinity = affinity  # False: no multiplexed id, Serve routes by load only (the bench's baseline)
        ray, serve = import_ray_serve()
        from .ray_deployment import StudioDeployment  # imports ray.serve at its top: only with --engine ray

        self._ray, self._serve = ray, serve
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     runtime_env={"env_vars": forwarded_env()})
        options = replica_options(ray.cluster_resources(), device, min_replicas, max_replicas)
        self.replicas = options.get("num_replicas") or options["autoscaling_config"]["max_replicas"]
        actor = options["ray_actor_options"]
        spec = "tiny" if self.local.weights.is_tiny else self.local.weights_spec
        settings = WorkerSettings(device=device, weights=spec, dtype=dtype, cache_bytes=cache_bytes,
                                  torch_threads=None if actor.get("num_gpus") else actor["num_cpus"])
        serve.start(proxy_location="Disabled")  # no HTTP ingress: the Gradio app is the only front door
        self.handle = serve.run(StudioDeployment.options(**options).bind(settings), name=APP_NAME,
                                route_prefix=None)
        self._lock = threading.Lock()
        self.counts: dict[str, dict] = {}
        self.running_pids: set[int] = set()

    @property
    def workers(self) -> int:
        return self.replicas

    def call(self, method: str, request: GenerationRequest, *, progress: ProgressCallback | None = None,
             cancelled: Callable[[], bool] | None = None):
        request = request.validated()
        key = part_set_key(request)
        for attempt in range(ATTEMPTS):
            try:
                result = self._stream(method, request, key, progress, cancelled)
            except (GenerationCancelled, Parts2WholeInputError, ServiceUnavailable):
                raise
            except self._ray.exceptions.RayError as error:  # the replica died (or could not be reached)
                if attempt + 1 == ATTEMPTS:
                    raise ServiceUnavailable(f"The model replicas stopped twice during this generation "
                                             f"({one_line(error)[:200]}); please try again in a minute.") from None
                logger.warning("A replica died during a generation (%s); running it again.", type(error).__name__)
                continue
            if attempt:
                getattr(result, "notes", []).append(RETRY_NOTE)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream(self, method, request, key, progress, cancelled):
        """One attempt: the stream's progress forwarded, Stop turned into a cancel, the answer returned."""
        from ray.serve.exceptions import BackPressureError  # Ray is imported already (the engine is Ray)

        routed = {"multiplexed_model_id": key} if self.affinity else {}
        stream = self.handle.options(stream=True, **routed).call.remote(method, request)
        who = None
        try:
            for kind, payload in _cancellable(stream, cancelled):
                if kind == PROGRESS:
                    if progress is not None:
                        progress(payload)
                elif kind == RESULT:
                    self._count(who, payload)
                    return payload
                elif kind == ERROR:
                    raise payload
                else:
                    who = payload
                    self.running_pids.add(who["pid"])
        except BackPressureError:
            raise ServiceUnavailable("Every model replica is busy and the waiting line is full; "
                                     "please try again in a minute (your inputs are still here).") from None
        finally:
            if who is not None:
                self.running_pids.discard(who["pid"])
        raise self._ray.exceptions.RayError("the replica's stream ended without an answer")

    def _count(self, who: dict | None, result) -> None:
        if who is None:
            return
        with self._lock:
            counts = self.counts.setdefault(who["replica"], {"generations": 0, "cache_hits": 0})
            counts["generations"] += 1
            counts["cache_hits"] += bool(getattr(result, "reused_references", False))

    def stats(self) -> list[dict]:
        """Per replica this front end used: generations and reference-cache hits, as it counted them."""
        with self._lock:
            return [{"replica": replica, **counts} for replica, counts in self.counts.items()]

    def close(self) -> None:
        self._serve.delete(APP_NAME)


def _cancellable(stream, cancelled: Callable[[], bool] | None):
    """The stream's items; once `cancelled()` says so, the remote call is cancelled and Stop raised.

    Items arrive at least once per denoising step, so Stop is seen within a step; a watcher thread also
    catches it while the stream waits (loading, queueing, a slow step)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if cancelled():
                stream.cancel()
                return

    if cancelled is not None:
        threading.Thread(target=watch, name="p2w-ray-stop", daemon=True).start()
    try:
        for item in stream:
            if cancelled is not None and cancelled():
                stream.cancel()
                break
            yield item
    except Exception:
        if cancelled is not None and cancelled():
            raise GenerationCancelled("The generation was stopped.") from None
        raise
    finally:
        done.set()
    if cancelled is not None and cancelled():
        raise GenerationCancelled("The generation was stopped.")
