"""Click-to-refine masks with Segment Anything (the ``segment-anything`` package).

Why not ``SamPredictor``: its ``set_image`` stores the image embedding ON the predictor, so a
predictor shared by several users of the Gradio app races (user A's click is decoded against user
B's image). Here the model is used statelessly: the image encoder runs ONCE per image and its
output (with the resize bookkeeping) is kept in a bounded LRU :class:`EmbeddingCache` keyed by the
image's pixel content; each click runs only the prompt encoder and the mask decoder (the cheap
part). On CPU the prompt encoder + mask decoder are exported once per model to ONNX (from the
model's own modules, through ``segment_anything.utils.onnx.SamOnnxModel``'s prompt embedding) and
run with onnxruntime, about twice as fast as eager torch; without the ``onnx`` package (needed by
the exporter) clicks fall back to torch with a logged warning.

The UI keeps a :class:`ClickState` per image in ``gr.State``: the clicks (x, y, positive), an
optional box and the previous prediction's low-resolution logits, which are fed back to SAM as
``mask_input`` so each click refines the last mask instead of starting over.

Multimask policy: a single click (no box, no previous mask) is ambiguous (shirt or whole person?),
so SAM's three candidate masks are predicted and the one with the best predicted IoU is kept.
With more prompts SAM's single-mask output is used (``multimask="auto"``), which is what SAM was
trained to return for unambiguous prompts; ``multimask="always"`` forces best-of-three.

Checkpoints come from the Hub repo :data:`SAM_HUB_REPO_ID` (a mirror of the official
``dl.fbaipublicfiles.com`` files with their original names) into ``weights/sam/`` and are loaded
with ``torch.load(weights_only=True)`` (no arbitrary pickles) or from ``.safetensors``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from parts2whole.core.errors import CheckpointError, Parts2WholeInputError
from parts2whole.core.weights import hub_file

from .images import ImageSource, flatten_alpha, load_image, pixel_hash
from .masks import bounding_box, image_to_mask, mask_to_image

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

logger = logging.getLogger(__name__)

#: Hub repository hosting the official SAM checkpoints under ``checkpoints/``.
SAM_HUB_REPO_ID = "ybelkada/segment-anything"
#: Hub commit downloaded by default, so every install gets the same files (``revision=`` overrides it).
SAM_REVISION = "7790786db131bcdc639f24a915d9f2c331d843ee"
#: File of each SAM variant in :data:`SAM_HUB_REPO_ID` (the official file names).
SAM_CHECKPOINT_FILES: dict[str, str] = {
    "vit_b": "checkpoints/sam_vit_b_01ec64.pth",
    "vit_l": "checkpoints/sam_vit_l_0b3195.pth",
    "vit_h": "checkpoints/sam_vit_h_4b8939.pth",
}
#: MD5 of each official checkpoint as published by Meta (the file names carry its first six digits).
#: A download is checked against it once, so a mirror can never hand over different weights.
SAM_CHECKPOINT_MD5: dict[str, str] = {
    "vit_b": "01ec64d29a2fca3f0661936605ae66f8",
    "vit_l": "0b3195507c641ddb6910d2bb5adee89c",
    "vit_h": "4b8939a88964f0f4ff5f5b2642c598a6",
}
#: Suffix of the marker written next to a checkpoint whose checksum matched (the check is not repeated).
VERIFIED_SUFFIX = ".md5-verified"
#: Bytes read at a time while hashing a checkpoint.
HASH_CHUNK_BYTES = 8 * 1024 * 1024
#: The variant used when none is named: ViT-B is ~0.4 GB and fast enough on a CPU.
DEFAULT_SAM_MODEL = "vit_b"
#: Subfolder of ``weights/`` holding SAM checkpoints.
SAM_WEIGHTS_SUBFOLDER = "sam"
#: Image embeddings kept at once (a ViT-B/H embedding is 256x64x64 float32 = 4 MiB).
EMBEDDING_CACHE_ENTRIES = 16
#: Upper bound on the bytes held by the embedding cache.
EMBEDDING_CACHE_BYTES = 128 * 1024 * 1024

MultimaskPolicy = Literal["auto", "always", "never"]
#: onnxruntime threads per click: a click is small, and one thread each lets concurrent users' clicks
#: run side by side instead of fighting over the cores (measured faster on the 2-core target).
DECODER_THREADS = 1
#: Where clicks are decoded: "auto" = onnxruntime on CPU when the export works, else torch.
DecoderBackend = Literal["auto", "onnxruntime", "torch"]


# --- click bookkeeping (pure, kept by the UI) -----------------------------------------------------


@dataclass(frozen=True)
class Click:
    """One click in image pixel coordinates; ``positive`` False means "not this"."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True, eq=False)
class ClickState:
    """The prompts for one image, immutable: every method returns a new state.

    ``image_key`` ties the state to an image (:func:`~preprocess.images.pixel_hash`); a state for
    another image is reset by :meth:`for_image`. ``low_res_logits`` is the previous prediction's
    (1, 256, 256) logits, fed back as SAM's ``mask_input``.
    """

    image_key: str | None = None
    clicks: tuple[Click, ...] = ()
    box: tuple[float, float, float, float] | None = None
    low_res_logits: np.ndarray | None = field(default=None, repr=False)

    def for_image(self, image_key: str) -> ClickState:
        """This state if it belongs to ``image_key``, else a fresh one for it."""
        return self if self.image_key == image_key else ClickState(image_key=image_key)

    def add_click(self, x: float, y: float, positive: bool = True) -> ClickState:
        return replace(self, clicks=self.clicks + (Click(float(x), float(y), bool(positive)),))

    def with_box(self, box: tuple[float, float, float, float] | None) -> ClickState:
        """Set (or with ``None`` remove) the box ``(x0, y0, x1, y1)``; corners may come in any order."""
        if box is None:
            return replace(self, box=None, low_res_logits=None)
        x0, y0, x1, y1 = (float(value) for value in box)
        return replace(self, box=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))

    def undo(self) -> ClickState:
        """Remove the last click. The previous logits came from it, so they are dropped too."""
        return replace(self, clicks=self.clicks[:-1], low_res_logits=None)

    def clear(self) -> ClickState:
        return ClickState(image_key=self.image_key)

    def with_logits(self, low_res_logits: np.ndarray | None) -> ClickState:
        return replace(self, low_res_logits=low_res_logits)

    @property
    def has_prompt(self) -> bool:
        return bool(self.clicks) or self.box is not None

    @property
    def is_ambiguous(self) -> bool:
        """One click and nothing else: SAM cannot know which of the nested objects is meant."""
        return len(self.clicks) == 1 and self.box is None and self.low_res_logits is None


def click_state_from_mask(mask: Image.Image | np.ndarray, image_key: str | None = None) -> ClickState:
    """A state whose box is the bounding box of ``mask`` (e.g. the parser's), for SAM to refine.

    An empty mask gives a state without prompt (the UI then asks for a click).
    """
    pixels = image_to_mask(mask) if isinstance(mask, Image.Image) else np.asarray(mask, dtype=bool)
    box = bounding_box(pixels)
    state = ClickState(image_key=image_key)
    return state if box is None else state.with_box(box)


# --- embeddings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM's image-encoder output for one image plus the sizes needed to map prompts and masks."""

    features: torch.Tensor  # (1, C, h, w)
    original_size: tuple[int, int]  # (height, width) of the image
    input_size: tuple[int, int]  # (height, width) after ResizeLongestSide, before padding

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


class EmbeddingCache:
    """Thread-safe LRU of :class:`ImageEmbedding` bounded by entry count and by bytes."""

    def __init__(self, max_entries: int = EMBEDDING_CACHE_ENTRIES, max_bytes: int = EMBEDDING_CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> ImageEmbedding | None:
        with self._lock:
            embedding = self._entries.get(key)
            if embedding is not None:
                self._entries.move_to_end(key)
            return embedding

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        with self._lock:
            self._entries[key] = embedding
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or self._held_bytes() > self.max_bytes):
                self._entries.popitem(last=False)

    def _held_bytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._held_bytes()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries


# --- prediction -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamResult:
    """A refined mask (``L``, image size, 255 = selected), its predicted IoU and the next state."""

    mask: Image.Image
    score: float
    state: ClickState


def select_best_mask(iou_predictions: np.ndarray) -> int:
    """Index of the candidate mask with the highest predicted IoU."""
    return int(np.argmax(np.asarray(iou_predictions).reshape(-1)))


class SamSegmenter:
    """Stateless SAM wrapper: one shared model, per-image embeddings in a bounded cache.

    Safe to share across threads/users: nothing per-image is stored on the model, and the cache
    is locked. Use :meth:`from_hub` for the released checkpoints.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        device: str = "cpu",
        cache: EmbeddingCache | None = None,
        decoder_backend: DecoderBackend = "auto",
    ) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide  # heavy: imported on first use, keeps importing this package light

        self.sam = sam.to(device).eval()
        self.device = device
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.decoder_backend = decoder_backend
        self._onnx_decoder = None
        self._onnx_lock = threading.Lock()

    @classmethod
    def from_hub(cls, model_type: str = DEFAULT_SAM_MODEL, *, revision: str = SAM_REVISION, device: str = "cpu") -> SamSegmenter:
        """Download (first use only) and load a SAM variant: ``vit_b`` (default), ``vit_l`` or ``vit_h``."""
        return cls(load_sam(model_type, download_sam_checkpoint(model_type, revision=revision)), device=device)

    def prepare_decoder(self) -> str:
        """Export the ONNX click decoder now (1-2 s for ViT-B) instead of on the first click.

        Returns the backend clicks will use: ``"onnxruntime"`` or ``"torch"``.
        """
        return "onnxruntime" if self._onnx_session() is not None else "torch"

    def image_key(self, image: ImageSource) -> str:
        """The key of ``image`` in the cache (and of its :class:`ClickState`)."""
        return pixel_hash(_as_rgb(image))

    def embed(self, image: ImageSource) -> tuple[str, ImageEmbedding]:
        """The cached embedding of ``image`` (computed on first use) and its key."""
        rgb = _as_rgb(image)
        key = pixel_hash(rgb)
        cached = self.cache.get(key)
        if cached is not None:
            return key, cached
        embedding = self._encode(np.asarray(rgb))
        self.cache.put(key, embedding)
        return key, embedding

    def _encode(self, rgb: np.ndarray) -> ImageEmbedding:
        import torch  # heavy: imported on first use, keeps importing this package light

        resized = self.transform.apply_image(rgb)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None].float()
        with torch.inference_mode():
            features = self.sam.image_encoder(self.sam.preprocess(tensor))
        return ImageEmbedding(features=features, original_size=rgb.shape[:2], input_size=tuple(resized.shape[:2]))

    def predict(self, image: ImageSource, state: ClickState, multimask: MultimaskPolicy = "auto") -> SamResult:
        """Mask for the prompts in ``state`` on ``image``; the returned state carries the new logits.

        Raises :class:`Parts2WholeInputError` when ``state`` has no click and no box.
        """
        key, embedding = self.embed(image)
        if state.image_key not in (None, key):  # the image changed under the clicks: its old mask is stale
            state = state.with_logits(None)
        state = replace(state, image_key=key)
        if not state.has_prompt:
            raise Parts2WholeInputError("Click on the part (or draw a box around it) to select it.")
        use_multimask = multimask == "always" or (multimask == "auto" and state.is_ambiguous)
        low_res, scores = self._decode(embedding, state, use_multimask)
        best = select_best_mask(scores)
        chosen = low_res[:, best : best + 1]
        mask = self._full_size_mask(chosen, embedding)
        next_state = state.with_logits(chosen[0].cpu().numpy().astype(np.float32))
        return SamResult(mask=mask_to_image(mask), score=float(scores[best]), state=next_state)

    def _decode(self, embedding: ImageEmbedding, state: ClickState, multimask: bool) -> tuple[torch.Tensor, np.ndarray]:
        """Low-res logits (1, k, h, w) and predicted IoUs (k,) for the prompts; k = 3 or 1."""
        prompts = self._prompt_arrays(embedding, state)
        session = self._onnx_session()
        if session is not None:
            return _decode_onnx(session, embedding, prompts, multimask)
        return self._decode_torch(embedding, prompts, multimask)

    def _prompt_arrays(self, embedding: ImageEmbedding, state: ClickState) -> _PromptArrays:
        coords = labels = box = logits = None
        if state.clicks:
            coords = np.array([[click.x, click.y] for click in state.clicks], dtype=np.float32)
            coords = self.transform.apply_coords(coords, embedding.original_size).astype(np.float32)
            labels = np.array([1 if click.positive else 0 for click in state.clicks], dtype=np.int64)
        if state.box is not None:
            box = self.transform.apply_boxes(np.array([state.box], dtype=np.float32), embedding.original_size).astype(np.float32)
        if state.low_res_logits is not None:
            expected = tuple(self.sam.prompt_encoder.mask_input_size)
            if tuple(state.low_res_logits.shape[-2:]) == expected:
                logits = np.asarray(state.low_res_logits, dtype=np.float32).reshape(1, 1, *expected)
        return _PromptArrays(coords, labels, box, logits)

    def _decode_torch(self, embedding: ImageEmbedding, prompts: _PromptArrays, multimask: bool) -> tuple[torch.Tensor, np.ndarray]:
        import torch  # heavy: imported on first use, keeps importing this package light

        points = None
        if prompts.coords is not None:
            points = (
                torch.as_tensor(prompts.coords, device=self.device)[None],
                torch.as_tensor(prompts.labels, device=self.device)[None],
            )
        boxes = None if prompts.box is None else torch.as_tensor(prompts.box, device=self.device)
        masks = None if prompts.mask_logits is None else torch.as_tensor(prompts.mask_logits, device=self.device)
        with torch.inference_mode():
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
            low_res, iou = self.sam.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        return low_res, iou[0].cpu().numpy()

    def _onnx_session(self):
        """The onnxruntime prompt decoder (exported from this model on first use), or None for torch."""
        if self.decoder_backend == "torch" or (self.decoder_backend == "auto" and self.device != "cpu"):
            return None
        with self._onnx_lock:
            if self._onnx_decoder is None:
                try:
                    self._onnx_decoder = export_prompt_decoder(self.sam)
                except Exception as error:  # noqa: BLE001 - no onnx package, exporter change: torch still works
                    if self.decoder_backend == "onnxruntime":
                        raise CheckpointError(f"Could not export SAM's prompt decoder to ONNX: {error}") from error
                    logger.warning("SAM clicks run on torch (ONNX export failed: %s); expect about 2x slower clicks.", error)
                    self._onnx_decoder = False
            return self._onnx_decoder or None

    def _full_size_mask(self, low_res: torch.Tensor, embedding: ImageEmbedding) -> np.ndarray:
        import torch  # heavy: imported on first use, keeps importing this package light

        with torch.inference_mode():
            logits = self.sam.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
        return (logits[0, 0] > self.sam.mask_threshold).cpu().numpy()


@dataclass(frozen=True)
class _PromptArrays:
    """Prompts already mapped to the model's input frame."""

    coords: np.ndarray | None  # (N, 2) clicks
    labels: np.ndarray | None  # (N,) 1 positive, 0 negative
    box: np.ndarray | None  # (1, 4)
    mask_logits: np.ndarray | None  # (1, 1, h, w)


#: Point labels of SAM's prompt encoder besides 1/0: padding point, box top-left, box bottom-right.
PAD_POINT_LABEL, BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL = -1, 2, 3


def export_prompt_decoder(sam: Sam):
    """An onnxruntime session running SAM's prompt encoder + mask decoder (about 2x faster on CPU).

    Inputs: image_embeddings (1, C, h, w), point_coords (1, N, 2) in the model frame, point_labels
    (1, N) with boxes as two corner points (labels 2, 3) and a padding point (label -1) when there
    is no box, mask_input (1, 1, 4h, 4w), has_mask_input (1,). Outputs: low_res_masks (1, 4, 4h, 4w)
    and iou_predictions (1, 4), all four mask tokens (selection happens outside).
    """
    import onnxruntime  # heavy: imported on first use, keeps importing this package light
    import torch  # heavy: imported on first use, keeps importing this package light
    from segment_anything.utils.onnx import SamOnnxModel  # heavy: imported on first use, keeps importing this package light

    class PromptDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.prompts = SamOnnxModel(sam, return_single_mask=False)

        def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
            sparse = self.prompts._embed_points(point_coords, point_labels)
            dense = self.prompts._embed_masks(mask_input, has_mask_input)
            return sam.mask_decoder.predict_masks(
                image_embeddings=image_embeddings,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
            )

    channels = sam.prompt_encoder.embed_dim
    grid = tuple(sam.prompt_encoder.image_embedding_size)
    mask_size = tuple(sam.prompt_encoder.mask_input_size)
    example = (
        torch.zeros(1, channels, *grid),
        torch.zeros(1, 2, 2),
        torch.tensor([[1.0, PAD_POINT_LABEL]]),
        torch.zeros(1, 1, *mask_size),
        torch.zeros(1),
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            PromptDecoder().cpu().eval(), example, buffer,
            input_names=["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"],
            output_names=["low_res_masks", "iou_predictions"],
            dynamic_axes={"point_coords": {1: "points"}, "point_labels": {1: "points"}},
            opset_version=17, dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = DECODER_THREADS
    return onnxruntime.InferenceSession(buffer.getvalue(), sess_options=options, providers=["CPUExecutionProvider"])


def _decode_onnx(session, embedding: ImageEmbedding, prompts: _PromptArrays, multimask: bool):
    import torch  # heavy: imported on first use, keeps importing this package light

    coords, labels = [], []
    if prompts.coords is not None:
        coords.append(prompts.coords)
        labels.append(prompts.labels.astype(np.float32))
    if prompts.box is not None:
        coords.append(prompts.box.reshape(2, 2))
        labels.append(np.array([BOX_TOP_LEFT_LABEL, BOX_BOTTOM_RIGHT_LABEL], dtype=np.float32))
    else:  # SAM's prompt encoder pads with a "not a point" when there is no box
        coords.append(np.zeros((1, 2), dtype=np.float32))
        labels.append(np.array([PAD_POINT_LABEL], dtype=np.float32))
    features = embedding.features.detach().cpu().numpy()
    mask_shape = (1, 1, features.shape[-2] * 4, features.shape[-1] * 4)
    has_mask = prompts.mask_logits is not None
    low_res, iou = session.run(None, {
        "image_embeddings": features,
        "point_coords": np.concatenate(coords)[None].astype(np.float32),
        "point_labels": np.concatenate(labels)[None].astype(np.float32),
        "mask_input": prompts.mask_logits if has_mask else np.zeros(mask_shape, dtype=np.float32),
        "has_mask_input": np.array([1.0 if has_mask else 0.0], dtype=np.float32),
    })
    chosen = slice(1, None) if multimask else slice(0, 1)  # what MaskDecoder.forward returns
    return torch.from_numpy(np.ascontiguousarray(low_res[:, chosen])), iou[0, chosen]


def _as_rgb(image: ImageSource) -> Image.Image:
    return flatten_alpha(load_image(image, what="photo"))


# --- checkpoints ----------------------------------------------------------------------------------


def download_sam_checkpoint(model_type: str = DEFAULT_SAM_MODEL, *, revision: str = SAM_REVISION) -> Path:
    """Local path of the official checkpoint for ``model_type``, downloaded into ``weights/sam/`` on first use."""
    if model_type not in SAM_CHECKPOINT_FILES:
        raise Parts2WholeInputError(f"Unknown SAM model {model_type!r}; use one of {', '.join(SAM_CHECKPOINT_FILES)}.")
    path = hub_file(SAM_HUB_REPO_ID, SAM_CHECKPOINT_FILES[model_type], revision=revision, subfolder=SAM_WEIGHTS_SUBFOLDER)
    verify_sam_checkpoint(path, SAM_CHECKPOINT_MD5[model_type])
    return path


def verify_sam_checkpoint(path: Path, expected_md5: str) -> None:
    """Refuse a checkpoint whose bytes are not the official file's (a truncated or swapped download).

    The result is remembered in a marker file next to the checkpoint, so the hash (seconds for ViT-H)
    is computed once per file, not on every start.
    """
    marker = path.with_name(path.name + VERIFIED_SUFFIX)
    if marker.is_file() and marker.read_text().strip() == expected_md5:
        return
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected_md5:
        raise CheckpointError(
            f"SAM checkpoint {path} is not the official file (MD5 {actual}, expected {expected_md5}): "
            f"the download is incomplete or was replaced. Delete it and start again to download it afresh."
        )
    marker.write_text(expected_md5 + "\n")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a ``torch.save`` file, read with ``weights_only=True``."""
    import torch  # heavy: imported on first use, keeps importing this package light

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # heavy: imported on first use, keeps importing this package light

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unsafe pickle, truncated file, wrong format: all unusable
        raise CheckpointError(f"SAM checkpoint {path} cannot be read safely ({type(error).__name__}: {error}).") from error
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(hasattr(value, "shape") for value in state.values()):
        raise CheckpointError(f"SAM checkpoint {path} is not a state dict of tensors.")
    return state


def load_sam_weights(sam: Sam, path: str | Path) -> Sam:
    """Load ``path`` into ``sam`` strictly (every tensor present, no extra, same shapes)."""
    state = read_state_dict(path)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"SAM checkpoint {path} does not fit this SAM variant: {error}") from error
    return sam.eval()


def load_sam(model_type: str, checkpoint: str | Path) -> Sam:
    """Build the ``model_type`` SAM architecture and load ``checkpoint`` into it."""
    from segment_anything import sam_model_registry  # heavy: imported on first use, keeps importing this package light

    if model_type not in SAM_CHECKPOINT_FILES:
        raise Parts2WholeInputError(f"Unknown SAM model {model_type!r}; use one of {', '.join(SAM_CHECKPOINT_FILES)}.")
    return load_sam_weights(sam_model_registry[model_type](checkpoint=None), checkpoint)


_default_segmenters: dict[str, SamSegmenter] = {}
_default_lock = threading.Lock()


def get_segmenter(model_type: str = DEFAULT_SAM_MODEL) -> SamSegmenter:
    """The process-wide segmenter for ``model_type`` (downloads and loads on first use)."""
    with _default_lock:
        if model_type not in _default_segmenters:
            _default_segmenters[model_type] = SamSegmenter.from_hub(model_type)
        return _default_segmenters[model_type]


def refine_mask(image: ImageSource, state: ClickState, segmenter: SamSegmenter | None = None) -> SamResult:
    """One click-to-refine step with the default ViT-B segmenter (or ``segmenter``)."""
    return (segmenter or get_segmenter()).predict(image, state)
