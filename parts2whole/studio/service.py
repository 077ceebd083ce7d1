"""The studio itself: one cached Parts2Whole model shared by every request of the app and the CLI.

It loads the model once, lazily and under a lock; generates from a request validated once (see
`request.py`), reusing cached reference encodings; reports progress per stage; and turns running out of
memory into a message. Nothing here keeps per-user state: the cache is keyed by content only.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model.edit_region import feathered_alpha
from ..core.errors import GenerationCancelled, GenerationOutOfMemory, Parts2WholeInputError
from .cache import DEFAULT_CACHE_BYTES, ReferenceCache, encode_with_cache
from .edit_request import EditRequest, working_size
from .device import DeviceChoice, choose_device, gpu_task
from .memory import free_memory, is_out_of_memory, out_of_memory_message
from .progress import (STAGE_CACHED, STAGE_DECODING, STAGE_DENOISING, STAGE_DONE, STAGE_ENCODING, STAGE_LOADING,
                       STAGE_PREPROCESSING, ProgressCallback, check_cancelled, report)
from .request import MAX_SEED, GenerationRequest, GenerationResult
from .weights import ResolvedWeights, resolve_weights

logger = logging.getLogger("parts2whole.studio")

TINY_BANNER = (
    "Outputs come from a **tiny random test model**, not the real Parts2Whole weights: "
    "expect coloured noise, not portraits."
)

PipelineLoader = Callable[[ResolvedWeights, DeviceChoice], Any]


def load_pipeline(weights: ResolvedWeights, choice: DeviceChoice):
    """Build the pipeline from a resolved checkpoint; on ZeroGPU it stays on CPU until a GPU call."""
    from diffusers import AutoencoderKL  # heavy: importing the studio (and `--help`) stays light

    from ..model.loading import load_diffusers_model, read_structure_kind  # torch/diffusers, as above
    from ..model.pipeline import Parts2WholePipeline  # torch/diffusers, as above

    vae = load_diffusers_model(AutoencoderKL, Path(weights.vae_path), "vae", choice.dtype) if weights.vae_path else None
    # The pose guider's map kind: what the checkpoint declares (parts2whole.json), DensePose for the released one.
    pipe = Parts2WholePipeline.from_pretrained(weights.path, torch_dtype=choice.dtype, vae=vae,
                                               structure_kind=read_structure_kind(weights.path))
    if not choice.zero_gpu:
        pipe.to(choice.device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)  # the studio reports progress itself
    return pipe


class Studio:
    """The cached model behind the app and the CLI. Thread-safe; holds no per-user state."""

    def __init__(self, weights: str | None = None, *, device: str | None = None, dtype: str | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, loader: PipelineLoader = load_pipeline,
                 resolver: Callable[[str | None], ResolvedWeights] = resolve_weights):
        self.weights_spec = weights
        self._device_request = (device, dtype)
        self._loader = loader
        self._resolver = resolver
        self._weights: ResolvedWeights | None = None
        self._choice: DeviceChoice | None = None
        self._pipe = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one generation at a time per pipeline: schedulers are stateful
        self.reference_cache = ReferenceCache(cache_bytes)
        self._edit_pipe = None  # Parts2WholeEditPipeline.from_pipe(the pipeline), made on the first edit
        _STUDIOS[id(self)] = self

    # -- what is loaded

    @property
    def weights(self) -> ResolvedWeights:
        """The checkpoint (resolved on first use: downloads, or falls back to the tiny model offline)."""
        if self._weights is None:
            with self._load_lock:
                if self._weights is None:
                    self._weights = self._resolver(self.weights_spec)
        return self._weights

    @property
    def device_choice(self) -> DeviceChoice:
        if self._choice is None:
            self._choice = choose_device(*self._device_request)
        return self._choice

    @property
    def is_tiny(self) -> bool:
        return self.weights.is_tiny

    @property
    def is_loaded(self) -> bool:
        return self._pipe is not None

    def banner(self) -> str | None:
        """Markdown the UI shows above everything when outputs are not from the real model."""
        if not self.is_tiny:
            return None
        if self.weights.reason:
            why = f" Why: {self.weights.reason}; start the app again with internet access to get the real weights."
        else:
            why = " (You chose it with `--weights tiny`.)"
        return f"⚠️ {TINY_BANNER}{why}"

    def pipeline(self):
        """The loaded pipeline; the first caller loads it, concurrent callers wait for that one load."""
        if self._pipe is None:
            weights, choice = self.weights, self.device_choice
            with self._load_lock:
                if self._pipe is None:
                    started = time.perf_counter()
                    logger.info("Loading %s on %s (%s)...", weights.name, choice.device, choice.dtype_name)
                    self._pipe = self._loader(weights, choice)
                    logger.info("Model ready in %.1f s.", time.perf_counter() - started)
        return self._pipe

    def structure_kind(self) -> str:
        return getattr(self.pipeline(), "structure_kind", "densepose")

    def _model_identity(self) -> str:
        choice = self.device_choice
        return f"{self.weights.path}|{self.weights.revision}|{self.weights.vae_path}|{choice.device}|{choice.dtype}"

    # -- generation

    def generate(self, request: GenerationRequest, progress: ProgressCallback | None = None,
                 cancelled: Callable[[], bool] | None = None) -> GenerationResult:
        """Validate (only a request not validated yet), encode references (or reuse them), denoise and
        decode, reporting each stage. The pipeline checks nothing again: it runs `request.model_request`.

        `cancelled` is polled before each stage and denoising step: when it returns True the work stops
        with `GenerationCancelled` and the model is free for the next request. Running out of memory
        raises `GenerationOutOfMemory` (a `Parts2WholeInputError` whose message suggests a smaller size).
        """
        return self._serve(request, progress, cancelled)

    def edit(self, request: EditRequest, progress: ProgressCallback | None = None,
             cancelled: Callable[[], bool] | None = None) -> GenerationResult:
        """Change the request's parts inside its region of its source, like `generate` in every other way
        (validated once, cached references, progress, cancellation, out of memory as a message). The images
        have the source's size; outside the region and its feather band they are the source's pixels."""
        return self._serve(request, progress, cancelled)

    def _edit_on_device(self, pipe, request: EditRequest, progress: ProgressCallback | None,
                        cancelled: Callable[[], bool] | None):
        """The device part of an edit: the crop's working size, the per-reference encodings, the blended
        denoising (`Parts2WholeEditPipeline.edit_checked`), the crop pasted back at the source's size."""
        import torch  # heavy: importing the studio (and `--help`) stays light

        from ..model.editing import Parts2WholeEditPipeline, crop_box  # torch/diffusers, as above

        if self._edit_pipe is None or self._edit_pipe.unet is not pipe.unet:
            self._edit_pipe = Parts2WholeEditPipeline.from_pipe(pipe)
        edit = request.checked_edit
        box = crop_box(feathered_alpha(edit.region, edit.feather), request.structure, request.width, request.height,
                       edit.padding_mask_crop)
        height, width = working_size(box, request.height, request.width)
        checked = dataclasses.replace(request.model_request, height=height, width=width)
        encoding, reused = self._encode(pipe, checked, progress)
        report(progress, STAGE_DENOISING, 0, request.steps)
        check_cancelled(cancelled)
        output = self._edit_pipe.edit_checked(
            dataclasses.replace(checked, settings=dataclasses.replace(checked.settings, output_type="pil")), edit,
            reference_encoding=encoding, generator=torch.Generator(device="cpu").manual_seed(request.seed),
            callback_on_step_end=self._step_reporter(request, progress, cancelled))
        return list(output.images), reused

    def _serve(self, request, progress: ProgressCallback | None, cancelled: Callable[[], bool] | None) -> GenerationResult:
        """`generate` and `edit`: validate once, pick a seed, load, run on the device, record parameters."""
        started = time.perf_counter()
        report(progress, STAGE_PREPROCESSING)
        request = request.validated()  # returns a validated request as it is
        if request.seed is None:
            request = request.with_seed(secrets.randbelow(MAX_SEED + 1))
        if not self.is_loaded:
            report(progress, STAGE_LOADING)
        pipe = self.pipeline()
        notes = request.notes(pipe)  # for the caller to show, and the log
        for note in notes:
            logger.warning(note)
        images, reused = self._run(request, progress, cancelled)
        seconds = time.perf_counter() - started
        parameters = request.parameters() | {
            "weights": self.weights.name,
            "weights_revision": self.weights.revision,
            "tiny_model": self.is_tiny,
            "device": self.device_choice.device,
            "dtype": self.device_choice.dtype_name,
            "seconds": round(seconds, 2),
        }
        report(progress, STAGE_DONE)
        return GenerationResult(images=images, request=request, parameters=parameters,
                                reused_references=reused, seconds=seconds, notes=notes)

    def _run(self, request: GenerationRequest, progress: ProgressCallback | None,
             cancelled: Callable[[], bool] | None):
        """The device part of `generate`, here or in a ZeroGPU worker; out of memory becomes a message."""
        try:
            if self.device_choice.zero_gpu:
                # ZeroGPU runs the call in a forked worker and pickles its arguments: pass only data, look the
                # studio up there, and report the denoising as one stage (callbacks cannot cross processes).
                check_cancelled(cancelled)
                report(progress, STAGE_DENOISING, 0, request.steps)
                return _run_on_zero_gpu(id(self), request)
            return self._on_device(request, progress, cancelled)
        except (GenerationCancelled, Parts2WholeInputError):
            raise
        except BaseException as error:
            if not is_out_of_memory(error):
                raise
            free_memory()
            raise GenerationOutOfMemory(out_of_memory_message(request, self.device_choice.device)) from None

    def _on_device(self, request, progress: ProgressCallback | None, cancelled: Callable[[], bool] | None = None):
        """A validated generation or edit, on the model's device, one at a time."""
        pipe = self.pipeline()
        with self._run_lock:
            check_cancelled(cancelled)  # stopped while waiting for the model: do not start
            if self.device_choice.zero_gpu:
                pipe.to(self.device_choice.device)
            if isinstance(request, EditRequest):
                return self._edit_on_device(pipe, request, progress, cancelled)
            return self._generate_on_device(pipe, request, progress, cancelled)

    def _step_reporter(self, request, progress: ProgressCallback | None, cancelled: Callable[[], bool] | None):
        def on_step_end(_pipe, step_index, _timestep, callback_kwargs):
            check_cancelled(cancelled)  # raising here leaves the denoising loop and frees the lock
            report(progress, STAGE_DENOISING, step_index + 1, request.steps)
            return callback_kwargs

        return on_step_end

    def _generate_on_device(self, pipe, request: GenerationRequest, progress: ProgressCallback | None,
                            cancelled: Callable[[], bool] | None = None):
        import torch  # heavy: importing the studio (and `--help`) stays light

        checked = request.model_request
        encoding, reused = self._encode(pipe, checked, progress)
        report(progress, STAGE_DENOISING, 0, request.steps)
        check_cancelled(cancelled)
        generator = torch.Generator(device="cpu").manual_seed(request.seed)
        output = pipe.generate_checked(checked, reference_encoding=encoding, generator=generator,
                                       callback_on_step_end=self._step_reporter(request, progress, cancelled))
        report(progress, STAGE_DECODING)
        images = pipe.decode_latents(output.images, output_type="pil")
        return list(images), reused

    def _encode(self, pipe, checked, progress: ProgressCallback | None):
        """(encoding, reused): each reference from the cache when it was encoded before (in any set), the
        others encoded now in one call (`cache.encode_with_cache`); reused is True when nothing was encoded."""
        labels = checked.references.labels
        report(progress, STAGE_ENCODING)
        encoding, encoded = encode_with_cache(self.reference_cache, self._model_identity(), pipe, checked.references,
                                              checked.height, checked.width, checked.fusion_blocks)
        if not encoded:
            report(progress, STAGE_CACHED)
        elif len(encoded) < len(labels):
            logger.info("References: %d of %d parts reused from the cache.", len(labels) - len(encoded), len(labels))
        return encoding, not encoded


#: Studios by id, so the ZeroGPU worker (a fork of this process) can find the one that called it.
_STUDIOS: weakref.WeakValueDictionary[int, Studio] = weakref.WeakValueDictionary()


@gpu_task()
def _run_on_zero_gpu(studio_id: int, request):
    """The GPU part of a generation on ZeroGPU: `spaces.GPU` attaches a GPU for this call only."""
    return _STUDIOS[studio_id]._on_device(request, None)


_DEFAULT_STUDIO: Studio | None = None
_DEFAULT_STUDIO_LOCK = threading.Lock()


def get_studio(weights: str | None = None, **kwargs) -> Studio:
    """The process-wide studio (the model is shared by all users; nothing user-specific lives in it)."""
    global _DEFAULT_STUDIO
    with _DEFAULT_STUDIO_LOCK:
        if _DEFAULT_STUDIO is None:
            _DEFAULT_STUDIO = Studio(weights, **kwargs)
        return _DEFAULT_STUDIO
