"""The studio: one cached Parts2Whole model shared by every request of the app and the CLI.

Why a wrapper at all: loading the model takes long and a lot of memory, so it happens once, lazily and
under a lock; weights come from the Hub when it is reachable and from a tiny local model when it is not
(so the app always starts); progress is reported per stage so the UI can show a real progress bar; and
reference encodings are cached by content, so a new seed or prompt with the same parts skips the
reference UNet. Nothing here keeps per-user state: the cache is keyed by content only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..model import validation
from ..core.errors import CheckpointError, GenerationCancelled, GenerationOutOfMemory, Parts2WholeInputError
from ..core.labels import MAX_REFERENCES, PART_LABELS, canonical_label
from ..core.limits import (MAX_SIDE, MIN_SIDE, SIZE_MULTIPLE, STUDIO_MAX_IMAGES, STUDIO_MAX_SEED,  # noqa: F401 - re-exported
                           STUDIO_MAX_STEPS)
from ..core.weights import HUB_TIMEOUT_S, WEIGHTS_DIR_ENV, hub_offline, is_unreachable, weights_dir  # noqa: F401 - re-exported
from ..model.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES, canonical_scheduler_name  # noqa: F401 - re-exported
from ..model.schedulers import FAST_SCHEDULER, FAST_STEPS, SCHEDULERS  # noqa: F401 - re-exported

logger = logging.getLogger("parts2whole.studio")

#: What `--weights` / P2W_WEIGHTS accept besides a Hub id or a folder.
TINY_WEIGHTS = "tiny"
OFFICIAL_WEIGHTS = "official"
WEIGHTS_ENV = "P2W_WEIGHTS"
DEVICE_ENV = "P2W_DEVICE"
DTYPE_ENV = "P2W_DTYPE"
TINY_DIR_NAME = "tiny-parts2whole"
#: Written last into the tiny checkpoint folder, so a half-built folder is never used.
TINY_COMPLETE_MARKER = ".complete"
#: Reference encodings kept across generations (bytes of tensors, all entries together).
DEFAULT_CACHE_BYTES = 512 * 1024**2
#: Seconds of GPU time asked of ZeroGPU per generation on Hugging Face Spaces.
ZERO_GPU_DURATION_S = 120

DEFAULT_HEIGHT = 768
DEFAULT_WIDTH = 512
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 3.5
DEFAULT_FUSION_BLOCKS = "full"
FUSION_BLOCK_CHOICES = ("full", "midup")
#: The studio's bounds (parts2whole.core.limits: the one table, with the library's and why they differ).
MAX_STEPS, MAX_IMAGES, MAX_SEED = STUDIO_MAX_STEPS, STUDIO_MAX_IMAGES, STUDIO_MAX_SEED

TINY_BANNER = (
    "Outputs come from a **tiny random test model**, not the real Parts2Whole weights: "
    "expect coloured noise, not portraits."
)

# Stages reported to progress callbacks, with the share of the bar each one fills.
STAGE_PREPROCESSING = "Preprocessing"
STAGE_LOADING = "Loading model"
STAGE_ENCODING = "Encoding references"
STAGE_CACHED = "Reusing cached references"
STAGE_DENOISING = "Denoising"
STAGE_DECODING = "Decoding"
STAGE_DONE = "Done"
_STAGE_SPANS = {
    STAGE_PREPROCESSING: (0.00, 0.03),
    STAGE_LOADING: (0.03, 0.05),
    STAGE_ENCODING: (0.05, 0.15),
    STAGE_CACHED: (0.05, 0.15),
    STAGE_DENOISING: (0.15, 0.95),
    STAGE_DECODING: (0.95, 1.00),
    STAGE_DONE: (1.00, 1.00),
}


# --------------------------------------------------------------------------------------------- devices


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """Where the model runs and in which precision; `zero_gpu` means: load on CPU, move per call."""

    device: str
    dtype: Any  # torch.dtype (kept untyped so importing this module stays light)
    zero_gpu: bool = False

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


_DTYPE_NAMES = {"fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16",
                "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32", "float": "float32"}


def on_zero_gpu() -> bool:
    """True on a Hugging Face Space with ZeroGPU hardware (GPU attached only inside `spaces.GPU` calls)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "true"}


def choose_device(device: str | None = None, dtype: str | None = None) -> DeviceChoice:
    """Pick CUDA (fp16, the precision of the official inference script), then MPS (fp16), then CPU (fp32).

    `device`/`dtype` (or P2W_DEVICE / P2W_DTYPE) override the choice, e.g. "cuda:1", "bf16".
    """
    import torch

    device = device or os.environ.get(DEVICE_ENV) or None
    dtype = dtype or os.environ.get(DTYPE_ENV) or None
    zero_gpu = on_zero_gpu() and device is None
    if device is None:
        if zero_gpu or torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype is None:
        dtype_value = torch.float32 if device.startswith("cpu") else torch.float16
    else:
        name = _DTYPE_NAMES.get(dtype.lower())
        if name is None:
            raise Parts2WholeInputError(f"Unknown dtype {dtype!r}; use fp16, bf16 or fp32.")
        dtype_value = getattr(torch, name)
    return DeviceChoice(device=device, dtype=dtype_value, zero_gpu=zero_gpu)


def gpu_task(duration: int = ZERO_GPU_DURATION_S) -> Callable[[Callable], Callable]:
    """Decorator: `spaces.GPU` on ZeroGPU Spaces, a no-op everywhere else (and when `spaces` is absent)."""

    def decorate(fn: Callable) -> Callable:
        if not on_zero_gpu():
            return fn
        try:
            import spaces  # type: ignore[import-not-found]
        except ImportError:
            return fn
        return spaces.GPU(duration=duration)(fn)

    return decorate


# --------------------------------------------------------------------------------------------- weights


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint found on disk, and what to tell people about it."""

    path: str  # local folder handed to Parts2WholePipeline.from_pretrained
    name: str  # what the UI, logs and the parameters JSON call it
    is_tiny: bool = False
    vae_path: str | None = None  # separate VAE folder (the official inference script swaps in sd-vae-ft-mse)
    revision: str | None = None
    notice: str | None = None  # one line explaining a fallback, for the log
    reason: str | None = None  # why the fallback happened, in a few words, for the UI banner


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


_TINY_BUILD_LOCK = threading.Lock()


def ensure_tiny_checkpoint(folder: Path | None = None) -> Path:
    """Build the tiny random checkpoint once (seconds) and reuse it; safe across threads and processes."""
    from filelock import FileLock

    from ..model.tiny import build_tiny_checkpoint

    folder = Path(folder) if folder is not None else weights_dir() / TINY_DIR_NAME
    if (folder / TINY_COMPLETE_MARKER).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _TINY_BUILD_LOCK, FileLock(str(folder) + ".lock"):
        if not (folder / TINY_COMPLETE_MARKER).exists():
            built = Path(build_tiny_checkpoint(folder))
            if built.resolve() != folder.resolve():
                folder = built
            (folder / TINY_COMPLETE_MARKER).write_text("built by parts2whole.model.tiny.build_tiny_checkpoint\n")
    return folder


#: Files of the VAE repository that are read (it also ships pickled and duplicate weights).
VAE_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]


def _download(repo_id: str, revision: str | None, *, vae: bool = False, with_vae: bool = True) -> str:
    """A Hub snapshot in the HF cache: from disk when it is already there, else downloaded (tqdm progress)."""
    from huggingface_hub import HfApi, snapshot_download

    from ..model.loading import resolve_checkpoint

    def fetch(local_files_only: bool) -> str:
        if vae:
            return snapshot_download(repo_id, revision=revision, allow_patterns=VAE_PATTERNS,
                                     local_files_only=local_files_only, etag_timeout=HUB_TIMEOUT_S)
        return str(resolve_checkpoint(repo_id, revision=revision, with_vae=with_vae, local_files_only=local_files_only))

    try:
        return fetch(local_files_only=True)
    except Exception:  # not cached yet (or partially): go to the network below
        if hub_offline():
            raise
    # One quick request first: a download that cannot connect retries with back-off for half a minute.
    HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
    logger.info("Downloading %s%s from the Hugging Face Hub...", repo_id, f"@{revision}" if revision else "")
    return fetch(local_files_only=False)


def _tiny_weights(notice: str | None = None, reason: str | None = None) -> ResolvedWeights:
    folder = ensure_tiny_checkpoint()
    return ResolvedWeights(path=str(folder), name="tiny random model (weights/tiny-parts2whole)",
                           is_tiny=True, notice=notice, reason=reason)


def _looks_like_tiny(folder: Path) -> bool:
    return (folder / TINY_COMPLETE_MARKER).exists()


def resolve_weights(spec: str | None = None) -> ResolvedWeights:
    """Turn `--weights` (Hub id, folder, "tiny", or nothing for the official model) into a local folder.

    When the Hub is unreachable, says so in one line and falls back to the tiny local checkpoint.
    """
    from ..model.loading import OFFICIAL_REPO_ID, OFFICIAL_REVISION, OFFICIAL_VAE_REPO_ID, OFFICIAL_VAE_REVISION

    spec = (spec or os.environ.get(WEIGHTS_ENV) or OFFICIAL_WEIGHTS).strip()
    if spec.lower() == TINY_WEIGHTS:
        return _tiny_weights()
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return ResolvedWeights(path=str(folder), name=str(folder), is_tiny=_looks_like_tiny(folder))
    official = spec.lower() == OFFICIAL_WEIGHTS or spec == OFFICIAL_REPO_ID
    if not official and not _HUB_ID.fullmatch(spec):
        raise CheckpointError(f"Weights {spec!r}: no such folder, and not a Hub id like 'owner/name' "
                              f"(use a folder, a Hub id, or 'tiny').")
    repo_id = OFFICIAL_REPO_ID if official else spec
    revision = OFFICIAL_REVISION if official else None
    try:
        path = _download(repo_id, revision, with_vae=not official)  # the official VAE comes separately
        vae_path = _download(OFFICIAL_VAE_REPO_ID, OFFICIAL_VAE_REVISION, vae=True) if official else None
    except Exception as error:  # noqa: BLE001 - classified just below
        if not is_unreachable(error):
            raise CheckpointError(f"Could not get weights {repo_id!r} from the Hub: {error}") from error
        cause = "HF_HUB_OFFLINE is set" if hub_offline() else f"{type(error).__name__}"
        notice = (f"Hugging Face Hub unreachable ({cause}) and {repo_id} is not cached: "
                  f"falling back to the tiny random model in {weights_dir() / TINY_DIR_NAME} (outputs are noise).")
        logger.warning(notice)
        reason = f"the Hugging Face Hub could not be reached ({cause}) to download {repo_id}"
        return _tiny_weights(notice, reason)
    name = f"{repo_id}@{revision[:7]}" if revision else repo_id
    return ResolvedWeights(path=path, name=name, vae_path=vae_path, revision=revision)


# --------------------------------------------------------------------------------------------- images


def default_mask(image: Image.Image) -> Image.Image:
    """The mask used when the user gives none: the image's alpha channel, else the whole image."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return Image.new("L", image.size, 255)


def fit_mask(mask: Image.Image, image: Image.Image) -> Image.Image:
    """A mask as 8-bit greyscale at the image's size (white = keep); RGBA masks use their alpha if it varies."""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        grey = alpha if alpha.getextrema() != (255, 255) else mask.convert("L")
    elif mask.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        from preprocess.images import to_mask

        grey = to_mask(mask)  # scaled to 8 bits (a plain convert would clip every value above 255 to white)
    else:
        grey = mask.convert("L")
    if grey.size != image.size:
        grey = grey.resize(image.size, Image.Resampling.NEAREST)
    return grey


#: How far ignored pixels are faded towards white in mask previews (0 = not at all, 1 = white).
MASK_PREVIEW_FADE = 0.78
MASK_PREVIEW_BACKDROP = (236, 236, 236)


def overlay_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The image with what the mask ignores faded out, so people see exactly which pixels are used."""
    rgba = image.convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, MASK_PREVIEW_BACKDROP + (255,)), rgba).convert("RGB")
    mask = fit_mask(mask if mask is not None else default_mask(image), image)
    faded = Image.blend(rgb, Image.new("RGB", rgb.size, (255, 255, 255)), MASK_PREVIEW_FADE)
    return Image.composite(rgb, faded, mask)


def mask_coverage(mask: Image.Image) -> float:
    """Share of pixels the mask keeps (0..1)."""
    values = np.asarray(mask.convert("L"))
    return float((values > 127).mean()) if values.size else 0.0


def normalise_image(image: Image.Image) -> Image.Image:
    """Apply EXIF rotation and keep transparency (RGBA) so the alpha can serve as the default mask; other
    modes become RGB the way file loading does it (16-bit and float greys are scaled, not clipped)."""
    from preprocess.images import normalise_mode

    image = ImageOps.exif_transpose(image)
    return image if image.mode in ("RGB", "RGBA") else normalise_mode(image)


# --------------------------------------------------------------------------------------------- requests


def _pil_image(value, what: str) -> Image.Image:
    if not isinstance(value, Image.Image):
        raise Parts2WholeInputError(
            f"{what} must be a PIL image, got {type(value).__name__}; "
            "open files with preprocess.images.load_image (it also checks them).")
    if value.width < 1 or value.height < 1:
        raise Parts2WholeInputError(f"{what} is empty (0 pixels).")
    if value.width * value.height > validation.MAX_IMAGE_PIXELS:
        raise Parts2WholeInputError(
            f"{what} is {value.width}x{value.height}, above the limit of "
            f"{validation.MAX_IMAGE_PIXELS // 1_000_000} megapixels; scale it down.")
    return value


def _number(value, name: str) -> float:
    """A finite number (int, float or numpy scalar; numeric text from forms is accepted too)."""
    if isinstance(value, bool):
        raise Parts2WholeInputError(f"{name} must be a number, got {value!r}.")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Parts2WholeInputError(f"{name} must be a number, got {value!r}.") from None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise Parts2WholeInputError(f"{name} must be a number, got {type(value).__name__}.")
    number = float(value)
    if not math.isfinite(number):
        raise Parts2WholeInputError(f"{name} must be a finite number, got {value!r}.")
    return number


def _whole_number(value, name: str) -> int:
    """A whole number: 30 or 30.0 pass (sliders send floats), 2.5 and "many" are refused."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    number = _number(value, name)
    if not number.is_integer():
        raise Parts2WholeInputError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


@dataclasses.dataclass
class GenerationRequest:
    """Everything one generation needs; `seed=None` means "pick one" (the result records which)."""

    references: Mapping[str, Image.Image]
    structure: Image.Image | None
    masks: Mapping[str, Image.Image | None] = dataclasses.field(default_factory=dict)
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    num_images: int = 1
    fusion_blocks: str = DEFAULT_FUSION_BLOCKS
    scheduler: str = DEFAULT_SCHEDULER  # a name of parts2whole.model.schedulers.SCHEDULER_NAMES

    def validated(self) -> GenerationRequest:
        """A copy with canonical labels, checked sizes and numbers; raises Parts2WholeInputError if unfixable."""
        if not isinstance(self.references, Mapping):
            raise Parts2WholeInputError(
                "references must map part labels to images, e.g. {'face': face_image}; "
                f"got {type(self.references).__name__}.")
        if self.masks is not None and not isinstance(self.masks, Mapping):
            raise Parts2WholeInputError(f"masks must map part labels to mask images; got {type(self.masks).__name__}.")
        references: dict[str, Image.Image] = {}
        for label, image in self.references.items():
            if image is None:
                continue
            key = canonical_label(label)
            if key in references:
                raise Parts2WholeInputError(f"Two images were given for {key!r}; give one per part.")
            references[key] = normalise_image(_pil_image(image, f"The {key!r} image"))
        if not references:
            raise Parts2WholeInputError(
                "Add at least one reference image (face, hair or headwear, clothes or shoes).")
        if len(references) > MAX_REFERENCES:
            raise Parts2WholeInputError(f"At most {MAX_REFERENCES} reference images fit in one generation.")
        masks: dict[str, Image.Image] = {}
        for label, mask in (self.masks or {}).items():
            if mask is None:
                continue
            key = canonical_label(label)
            if key not in references:
                raise Parts2WholeInputError(f"A mask was given for {key!r} but no image for that part.")
            mask = ImageOps.exif_transpose(_pil_image(mask, f"The mask for {key!r}"))
            image = references[key]
            if abs((mask.width / mask.height) / (image.width / image.height) - 1.0) > validation.MASK_ASPECT_TOLERANCE:
                raise Parts2WholeInputError(
                    f"The mask for {key!r} is {mask.width}x{mask.height} but its image is {image.width}x{image.height}, "
                    "a different shape: use the mask made for this image.")
            fitted = fit_mask(mask, image)
            if fitted.getextrema()[1] == 0:
                raise Parts2WholeInputError(f"The mask for {key!r} is empty: paint the area of the part to use.")
            masks[key] = fitted
        if self.structure is None:
            raise Parts2WholeInputError("Add a pose map (the structure image the person is drawn on).")
        structure = _pil_image(self.structure, "The pose map")
        height = _whole_number(self.height, "Height")
        width = _whole_number(self.width, "Width")
        for name, side in (("Height", height), ("Width", width)):
            if side % SIZE_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
                raise Parts2WholeInputError(
                    f"{name} must be a multiple of {SIZE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}, got {side}.")
        steps = _whole_number(self.steps, "Steps")
        if not 1 <= steps <= MAX_STEPS:
            raise Parts2WholeInputError(f"Steps must be between 1 and {MAX_STEPS}, got {steps}.")
        num_images = _whole_number(self.num_images, "Number of images")
        if not 1 <= num_images <= MAX_IMAGES:
            raise Parts2WholeInputError(f"Number of images must be between 1 and {MAX_IMAGES}, got {num_images}.")
        if self.fusion_blocks not in FUSION_BLOCK_CHOICES:
            raise Parts2WholeInputError(f"Fusion blocks must be one of {', '.join(FUSION_BLOCK_CHOICES)}.")
        guidance = _number(self.guidance_scale, "Guidance")
        if not 0 <= guidance <= validation.MAX_GUIDANCE:
            raise Parts2WholeInputError(f"Guidance must be between 0 and {validation.MAX_GUIDANCE:g}, got {guidance:g}.")
        seed = None if self.seed is None else _whole_number(self.seed, "Seed")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise Parts2WholeInputError(f"Seed must be between 0 and {MAX_SEED}, got {seed}.")
        for name, text in (("Prompt", self.prompt), ("Negative prompt", self.negative_prompt)):
            if text is not None and not isinstance(text, str):
                raise Parts2WholeInputError(f"{name} must be text, got {type(text).__name__}.")
        scheduler = canonical_scheduler_name(self.scheduler)
        ordered = {label: references[label] for label in PART_LABELS if label in references}
        return dataclasses.replace(
            self, references=ordered, masks=masks, structure=ImageOps.exif_transpose(structure).convert("RGB"),
            seed=seed, steps=steps, num_images=num_images, guidance_scale=guidance, height=height, width=width,
            prompt=self.prompt or "", negative_prompt=self.negative_prompt or "", scheduler=scheduler)

    def notes(self, pipe=None) -> list[str]:
        """What was adjusted on the way (a pose map stretched, a prompt cut to the text encoder's context)."""
        notes = [validation.structure_note(self.structure, self.height, self.width)]
        truncation_note = getattr(pipe, "prompt_truncation_note", None)
        if truncation_note is not None:
            notes.append(truncation_note(self.prompt))
        return [note for note in notes if note]

    def parameters(self) -> dict[str, Any]:
        """The settings that, with the same inputs and weights, reproduce the result (JSON-ready)."""
        return {
            "parts": list(self.references),
            "masked_parts": [label for label in self.references if self.masks.get(label) is not None],
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "num_images": self.num_images,
            "fusion_blocks": self.fusion_blocks,
            "scheduler": self.scheduler,
        }


@dataclasses.dataclass
class GenerationResult:
    images: list[Image.Image]
    request: GenerationRequest  # validated, with the seed actually used
    parameters: dict[str, Any]  # request parameters plus model, device and timing
    reused_references: bool
    seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)  # what was adjusted (pose stretched, prompt cut)


@dataclasses.dataclass(frozen=True)
class ProgressUpdate:
    """One progress report: `fraction` of the whole generation done, in which stage, with a short text."""

    stage: str
    fraction: float
    step: int | None = None
    total: int | None = None

    @property
    def text(self) -> str:
        return f"{self.stage} {self.step}/{self.total}" if self.total else self.stage


ProgressCallback = Callable[[ProgressUpdate], None]


def _report(callback: ProgressCallback | None, stage: str, step: int | None = None, total: int | None = None):
    if callback is None:
        return
    start, end = _STAGE_SPANS[stage]
    fraction = start if not total else start + (end - start) * min(step or 0, total) / total
    callback(ProgressUpdate(stage=stage, fraction=round(fraction, 4), step=step, total=total))


# --------------------------------------------------------------------------------------------- cache


def _tensor_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes held by the tensors inside an encoding (dataclass, mapping, sequence or plain object)."""
    import torch

    if seen is None and isinstance(getattr(value, "nbytes", None), int):
        return value.nbytes  # the pipeline's ReferenceEncoding knows its own size
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return sum(_tensor_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_tensor_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(_tensor_bytes(v, seen) for v in vars(value).values())
    return 0


class ReferenceCache:
    """Least-recently-used reference encodings, bounded by the bytes of their tensors.

    Keys are content hashes (see `reference_key`), so two sessions share an entry only when they sent
    exactly the same images, masks and settings to the same model: nothing of one user leaks to another.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, encoding: Any) -> None:
        size = _tensor_bytes(encoding)
        with self._lock:
            self._entries.pop(key, None)
            if size > self.max_bytes:
                return  # bigger than the whole budget: not worth evicting everything for it
            self._entries[key] = (encoding, size)
            total = sum(s for _, s in self._entries.values())
            while total > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                total -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _image_digest(hasher, image: Image.Image | None) -> None:
    if image is None:
        hasher.update(b"<none>")
        return
    hasher.update(f"{image.mode}:{image.size}".encode())
    hasher.update(image.tobytes())


def reference_key(model_identity: str, request: GenerationRequest) -> str:
    """A content hash of what reference encoding depends on: model, parts, pixels, masks, size, fusion."""
    hasher = hashlib.sha256()
    hasher.update(f"{model_identity}|{request.height}x{request.width}|{request.fusion_blocks}".encode())
    for label, image in request.references.items():
        hasher.update(f"|{label}|".encode())
        _image_digest(hasher, image)
        _image_digest(hasher, request.masks.get(label))
    return hasher.hexdigest()


# --------------------------------------------------------------------------------------------- studio


PipelineLoader = Callable[[ResolvedWeights, DeviceChoice], Any]


def load_pipeline(weights: ResolvedWeights, choice: DeviceChoice):
    """Build the pipeline from a resolved checkpoint; on ZeroGPU it stays on CPU until a GPU call."""
    from diffusers import AutoencoderKL

    from .. import Parts2WholePipeline
    from ..model.loading import load_diffusers_model, read_structure_kind

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
        """Validate, encode references (or reuse them), denoise and decode, reporting each stage.

        `cancelled` is polled before each stage and denoising step: when it returns True the work stops
        with `GenerationCancelled` and the model is free for the next request. Running out of memory
        raises `GenerationOutOfMemory` (a `Parts2WholeInputError` whose message suggests a smaller size).
        """
        started = time.perf_counter()
        _report(progress, STAGE_PREPROCESSING)
        request = request.validated()
        if request.seed is None:
            request = dataclasses.replace(request, seed=secrets.randbelow(MAX_SEED + 1))
        if not self.is_loaded:
            _report(progress, STAGE_LOADING)
        pipe = self.pipeline()
        notes = request.notes(pipe)  # for the caller to show; the pipeline logs them itself
        try:
            if self.device_choice.zero_gpu:
                # ZeroGPU runs the call in a forked worker and pickles its arguments: pass only data, look the
                # studio up there, and report the denoising as one stage (callbacks cannot cross processes).
                _check_cancelled(cancelled)
                _report(progress, STAGE_DENOISING, 0, request.steps)
                images, reused = _run_on_zero_gpu(id(self), request)
            else:
                images, reused = self._generate_on_device(request, progress, cancelled)
        except (GenerationCancelled, Parts2WholeInputError):
            raise
        except BaseException as error:
            if not is_out_of_memory(error):
                raise
            free_memory()
            raise GenerationOutOfMemory(out_of_memory_message(request, self.device_choice.device)) from None
        seconds = time.perf_counter() - started
        parameters = request.parameters() | {
            "weights": self.weights.name,
            "weights_revision": self.weights.revision,
            "tiny_model": self.is_tiny,
            "device": self.device_choice.device,
            "dtype": self.device_choice.dtype_name,
            "seconds": round(seconds, 2),
        }
        _report(progress, STAGE_DONE)
        return GenerationResult(images=images, request=request, parameters=parameters,
                                reused_references=reused, seconds=seconds, notes=notes)

    def _generate_on_device(self, request: GenerationRequest, progress: ProgressCallback | None,
                            cancelled: Callable[[], bool] | None = None):
        import torch

        pipe = self.pipeline()
        choice = self.device_choice
        with self._run_lock:
            _check_cancelled(cancelled)  # stopped while waiting for the model: do not start
            if choice.zero_gpu:
                pipe.to(choice.device)
            key = reference_key(self._model_identity(), request)
            encoding = self.reference_cache.get(key)
            reused = encoding is not None
            if reused:
                _report(progress, STAGE_CACHED)
            else:
                _report(progress, STAGE_ENCODING)
                encoding = pipe.encode_references(dict(request.references), dict(request.masks),
                                                  height=request.height, width=request.width,
                                                  fusion_blocks=request.fusion_blocks)
                self.reference_cache.put(key, encoding)
            _report(progress, STAGE_DENOISING, 0, request.steps)

            def on_step_end(_pipe, step_index, _timestep, callback_kwargs):
                _check_cancelled(cancelled)  # raising here leaves the denoising loop and frees the lock
                _report(progress, STAGE_DENOISING, step_index + 1, request.steps)
                return callback_kwargs

            _check_cancelled(cancelled)

            generator = torch.Generator(device="cpu").manual_seed(request.seed)
            output = pipe(
                references=dict(request.references), masks=dict(request.masks), structure=request.structure,
                prompt=request.prompt, negative_prompt=request.negative_prompt or None,
                height=request.height, width=request.width, num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale, generator=generator,
                fusion_blocks=request.fusion_blocks, num_images_per_prompt=request.num_images,
                output_type="latent", callback_on_step_end=on_step_end, reference_encoding=encoding,
                scheduler=request.scheduler,
            )
            _report(progress, STAGE_DECODING)
            images = pipe.decode_latents(output.images, output_type="pil")
        return list(images), reused


def _check_cancelled(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise GenerationCancelled("The generation was stopped.")


_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                        "failed to allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA/MPS/CPU allocation failures (torch reports some as RuntimeError with a telling text)."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ in {"OutOfMemoryError", "OutOfMemory"}:  # torch.cuda.OutOfMemoryError and kin
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OUT_OF_MEMORY_TEXTS)


def free_memory() -> None:
    """Give the memory of an abandoned generation back, so the next request has room."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing is best effort
        logger.debug("could not empty the CUDA cache", exc_info=True)


def out_of_memory_message(request: GenerationRequest, device: str) -> str:
    where = "the GPU" if str(device).startswith(("cuda", "mps")) else "the computer"
    parts = len(request.references)
    images = f"{request.num_images} images" if request.num_images != 1 else "1 image"
    return (f"Out of memory on {where} while generating {images} of {request.height}x{request.width} from "
            f"{parts} part{'s' if parts != 1 else ''}. Try a smaller output size (e.g. 512x384), fewer images "
            "or fewer parts, then generate again.")


#: Studios by id, so the ZeroGPU worker (a fork of this process) can find the one that called it.
_STUDIOS: weakref.WeakValueDictionary[int, Studio] = weakref.WeakValueDictionary()


@gpu_task()
def _run_on_zero_gpu(studio_id: int, request: GenerationRequest):
    """The GPU part of a generation on ZeroGPU: `spaces.GPU` attaches a GPU for this call only."""
    return _STUDIOS[studio_id]._generate_on_device(request, None)


# --------------------------------------------------------------------------------------------- outputs


def parameters_json(parameters: Mapping[str, Any]) -> str:
    return json.dumps(dict(parameters), indent=2, sort_keys=False) + "\n"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


_DEFAULT_STUDIO: Studio | None = None
_DEFAULT_STUDIO_LOCK = threading.Lock()


def get_studio(weights: str | None = None, **kwargs) -> Studio:
    """The process-wide studio (the model is shared by all users; nothing user-specific lives in it)."""
    global _DEFAULT_STUDIO
    with _DEFAULT_STUDIO_LOCK:
        if _DEFAULT_STUDIO is None:
            _DEFAULT_STUDIO = Studio(weights, **kwargs)
        return _DEFAULT_STUDIO
