"""Photo -> DensePose IUV map with :class:`~preprocess.densepose.model.DensePoseRCNN`.

Data flow of :meth:`DensePoseEstimator.__call__` (detectron2's ``DefaultPredictor`` + its chart
result conversion, as stated in ``../shared/densepose/README.md`` section 4)::

    photo (path / bytes / PIL)  -> upright RGB (EXIF orientation applied; alpha over white)
      -> resize with PIL BILINEAR on the uint8 image: short side 800, long side <= 1333
      -> BGR float32 minus the BGR mean (std 1), zero-padded bottom/right to a multiple of 32
      -> model: proposals -> person detections (score > threshold) in network-input pixels
      -> boxes scaled to photo pixels, clipped, empty ones dropped; the best one is "the person"
      -> its 112x112 coarse / fine segmentation and U / V resized (bilinear) to its integer box,
         I = argmax(fine) where argmax(coarse) > 0, U and V read from channel I
      -> the map: black photo-sized RGB image, blue = I, green = U * 255, red = V * 255 (truncated)

The map is the encoding of the Parts2Whole training data's ``densepose_*.png`` (OpenCV-written
``[I, U, V]`` arrays, hence I in blue).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as functional
from PIL import Image

from parts2whole.core.errors import CheckpointError, Parts2WholeInputError

from ..images import ImageSource, load_rgb
from parts2whole.core.weights import hub_file
from .checkpoint import cache_conversion, check_state_dict, expected_shapes, read_checkpoint
from .model import DEFAULT_SCORE_THRESHOLD, REAL_CONFIG, DensePoseConfig, DensePoseRCNN, clip_boxes, nonempty

logger = logging.getLogger(__name__)

#: Shown (and raised as :class:`NoPersonFound`) when no detection passes the score threshold.
NO_PERSON_MESSAGE = "No person found in the photo: upload a photo of one whole person"

#: Hub mirror of detectron2's model-zoo file (IDM-VTON ships it for its own DensePose step).
DENSEPOSE_REPO_ID = "yisol/IDM-VTON"
#: Stands for "no commit pinned" (kept so a fork can unpin: downloads then use ``main`` and say so).
UNPINNED_REVISION_PLACEHOLDER = "0" * 40
#: Commit of :data:`DENSEPOSE_REPO_ID` downloaded by default (``revision=`` overrides it): the snapshot that
#: public IDM-VTON set-ups load ``densepose/model_final_162be9.pkl`` from (their Hugging Face cache paths
#: ``models--yisol--IDM-VTON/snapshots/<commit>/densepose/...``); not checked against the Hub from here.
DENSEPOSE_REVISION = "585a32e74aee241cbc0d0cc3ab21392ca58c916a"
#: The branch downloaded while no commit is pinned (only a fork that unpins gets it; the default is a commit).
FALLBACK_BRANCH = "main"
#: The checkpoint's path inside the mirror (the model zoo's own file name).
DENSEPOSE_FILENAME = "densepose/model_final_162be9.pkl"
#: Subfolder of ``weights/`` the checkpoint is downloaded into.
DENSEPOSE_WEIGHTS_SUBFOLDER = "densepose"

#: Test-time resize (detectron2 INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST).
MIN_SIZE_TEST = 800
MAX_SIZE_TEST = 1333
#: Pixel mean (BGR order, 0..255 scale) and std subtracted / divided before the backbone.
PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)
PIXEL_STD_BGR = (1.0, 1.0, 1.0)
#: The padded input's sides are multiples of this (the FPN's coarsest stride).
SIZE_DIVISIBILITY = 32
#: U and V in [0, 1] become 0..255 in the map; values outside are clamped.
UV_SCALE = 255.0
UINT8_MAX = 255
#: Most values (channels x box pixels) resampled in one go: 64 Mi floats = 256 MB, so all 25
#: channels of a part map at once up to a 2.6-megapixel box, fewer per group beyond.
RESAMPLE_GROUP_ELEMENTS = 64 * 1024 * 1024
#: Memory layout of weights and activations (NHWC: faster convolutions, same numbers).
MEMORY_FORMAT = torch.channels_last
#: Channel of the map (RGB order) holding I, U, V.
I_CHANNEL, U_CHANNEL, V_CHANNEL = 2, 1, 0


class NoPersonFound(Parts2WholeInputError):
    """No detection passed the score threshold (the message says what to upload instead)."""

    def __init__(self, message: str = NO_PERSON_MESSAGE) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class DensePoseResult:
    """The IUV map of the most confident person in a photo, and where it came from."""

    map: Image.Image
    box: tuple[float, float, float, float]
    score: float
    num_people: int
    weights: str
    note: str | None = None

    def to_json(self) -> dict:
        """JSON-serialisable description (without the map)."""
        return {
            "box_xyxy": [round(value, 3) for value in self.box],
            "score": round(self.score, 6),
            "num_people": self.num_people,
            "weights": self.weights,
            "note": self.note,
        }


@dataclass(frozen=True)
class PersonCharts:
    """I, U, V over one person's integer box (``x``, ``y``, ``w``, ``h`` in photo pixels)."""

    labels: np.ndarray  # (h, w) uint8, 0 = background
    u: np.ndarray  # (h, w) float32, 0 where labels == 0
    v: np.ndarray  # (h, w) float32
    x: int
    y: int


def resized_size(height: int, width: int, short: int = MIN_SIZE_TEST, longest: int = MAX_SIZE_TEST) -> tuple[int, int]:
    """(h, w) after detectron2's ResizeShortestEdge: short side ``short``, long side at most ``longest``."""
    scale = short / min(height, width)
    if height < width:
        new_height, new_width = float(short), scale * width
    else:
        new_height, new_width = scale * height, float(short)
    if max(new_height, new_width) > longest:
        shrink = longest / max(new_height, new_width)
        new_height, new_width = new_height * shrink, new_width * shrink
    return int(new_height + 0.5), int(new_width + 0.5)


def prepare_input(rgb: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 3, H32, W32) normalised BGR network input of an RGB photo, and its unpadded (h, w)."""
    height, width = resized_size(rgb.height, rgb.width)
    resized = rgb.resize((width, height), Image.BILINEAR)
    bgr = np.asarray(resized, dtype=np.uint8)[:, :, ::-1]
    image = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1))).float()
    mean = torch.tensor(PIXEL_MEAN_BGR).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD_BGR).view(3, 1, 1)
    image = (image - mean) / std
    padded_height = -(-height // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    padded_width = -(-width // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    image = functional.pad(image, (0, padded_width - width, 0, padded_height - height), value=0.0)
    return image[None], (height, width)


def charts_to_box(coarse: torch.Tensor, fine: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                  box: torch.Tensor) -> PersonCharts:
    """Resample one detection's (C, S, S) outputs onto its box in photo pixels (x0, y0, x1, y1).

    detectron2 resizes all 77 channels to the box at once (bilinear, align_corners=False, no
    antialiasing), then I = argmax(fine) where argmax(coarse) > 0 and U, V = channel I. Here the
    channels are resized in groups of at most :data:`RESAMPLE_GROUP_ELEMENTS` values and folded into
    a running arg-max (a later group wins only when strictly greater, so ties go to the lower index
    as in ``argmax``): the same numbers, but a person filling a 12-megapixel photo needs a few
    box-sized planes, not gigabytes.
    """
    x0, y0, x1, y1 = box.to(torch.float32).tolist()
    x, y = int(x0), int(y0)
    width = max(int(np.float32(x1) - np.float32(x0)), 1)
    height = max(int(np.float32(y1) - np.float32(y0)), 1)
    group = max(1, RESAMPLE_GROUP_ELEMENTS // (height * width))

    def resized(planes: torch.Tensor) -> torch.Tensor:
        return functional.interpolate(planes[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]

    def argmax(planes: torch.Tensor) -> torch.Tensor:
        best = index = None
        for start in range(0, planes.shape[0], group):
            values, indices = resized(planes[start : start + group]).max(dim=0)
            if best is None:
                best, index = values, indices
            else:
                better = values > best
                best = torch.where(better, values, best)
                index = torch.where(better, indices + start, index)
        return index

    def pick(planes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        picked = torch.zeros((height, width), dtype=torch.float32, device=planes.device)
        for start in range(0, planes.shape[0], group):
            chunk = planes[start : start + group]
            local = labels - start
            inside = (local >= 0) & (local < chunk.shape[0]) & (labels > 0)
            if bool(inside.any()):
                values = torch.gather(resized(chunk), 0, local.clamp(0, chunk.shape[0] - 1)[None])[0]
                picked = torch.where(inside, values, picked)
        return picked

    foreground = argmax(coarse) > 0
    labels = argmax(fine).masked_fill_(~foreground, 0)
    return PersonCharts(labels.to(torch.uint8).cpu().numpy(), pick(u, labels).cpu().numpy(), pick(v, labels).cpu().numpy(), x, y)


def iuv_map(charts: PersonCharts, photo_size: tuple[int, int]) -> Image.Image:
    """Photo-sized (w, h) RGB map: black background, blue = I, green = U * 255, red = V * 255, truncated."""
    photo_width, photo_height = photo_size
    canvas = np.zeros((photo_height, photo_width, 3), dtype=np.uint8)
    height, width = charts.labels.shape
    rows = slice(charts.y, min(charts.y + height, photo_height))
    cols = slice(charts.x, min(charts.x + width, photo_width))
    keep_h, keep_w = rows.stop - rows.start, cols.stop - cols.start
    if keep_h > 0 and keep_w > 0:
        region = canvas[rows, cols]
        region[..., I_CHANNEL] = charts.labels[:keep_h, :keep_w]
        region[..., U_CHANNEL] = np.clip(charts.u[:keep_h, :keep_w] * UV_SCALE, 0, UINT8_MAX).astype(np.uint8)
        region[..., V_CHANNEL] = np.clip(charts.v[:keep_h, :keep_w] * UV_SCALE, 0, UINT8_MAX).astype(np.uint8)
    return Image.fromarray(canvas, mode="RGB")


def people_note(num_people: int) -> str | None:
    return None if num_people <= 1 else f"{num_people} people found: the map shows the most confident one."


@dataclass(frozen=True)
class DensePoseRun:
    """Everything :meth:`DensePoseEstimator.run` computes (the parity tests compare all of it)."""

    proposals: torch.Tensor  # (P, 4) network-input pixels
    proposal_logits: torch.Tensor
    boxes: torch.Tensor  # (N, 4) photo pixels, best first
    scores: torch.Tensor  # (N,)
    raw: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None  # top person's 112x112 outputs
    charts: PersonCharts | None
    photo_size: tuple[int, int]  # (w, h)


class _StageClock:
    """Seconds per stage into ``timings`` (nothing when it is None); waits for the GPU at each lap."""

    #: Suffix of the process-CPU seconds of a stage in ``timings`` ("backbone cpu").
    CPU_SUFFIX = " cpu"

    def __init__(self, timings: dict[str, float] | None, device: torch.device) -> None:
        self.timings, self.device = timings, device
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now, now_cpu = time.perf_counter(), time.process_time()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        cpu_key = stage + self.CPU_SUFFIX
        self.timings[cpu_key] = self.timings.get(cpu_key, 0.0) + now_cpu - self.last_cpu
        self.last, self.last_cpu = now, now_cpu


class DensePoseEstimator:
    """A loaded :class:`DensePoseRCNN` that turns photos into :class:`DensePoseResult`.

    Stateless between calls, so one estimator serves several threads at once.
    """

    def __init__(self, model: DensePoseRCNN, *, weights: str, device: str = "cpu",
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> None:
        self.device = torch.device(device)
        # Channels-last activations run the convolutions markedly faster on CPU (oneDNN) and on GPU.
        self.model = model.to(self.device).to(memory_format=MEMORY_FORMAT).eval()
        self.weights = weights
        self.score_threshold = float(score_threshold)

    @torch.inference_mode()
    def run(self, photo: ImageSource, *, timings: dict[str, float] | None = None) -> DensePoseRun:
        """Every stage on ``photo``; ``timings`` (if given) receives the wall seconds of each stage and,
        under ``"<stage> cpu"``, its process CPU seconds (all threads)."""
        clock = _StageClock(timings, self.device)
        rgb = load_rgb(photo, what="photo")
        image, image_size = prepare_input(rgb)
        image = image.to(self.device).contiguous(memory_format=MEMORY_FORMAT)
        clock.lap("input")
        model = self.model
        features = model.backbone(image)
        clock.lap("backbone")
        proposals, logits = model.proposal_generator(features, image_size)
        clock.lap("rpn")
        detections = model.roi_heads.detect(features, proposals, image_size, self.score_threshold)
        resized_height, resized_width = image_size
        scale = torch.tensor([rgb.width / resized_width, rgb.height / resized_height] * 2, device=self.device)
        boxes = clip_boxes(detections.boxes * scale, rgb.height, rgb.width)
        keep = nonempty(boxes)
        boxes, scores, network_boxes = boxes[keep], detections.scores[keep], detections.boxes[keep]
        clock.lap("box_head")
        raw = charts = None
        if len(boxes):
            outputs = model.roi_heads.densepose(features, network_boxes[:1])
            raw = tuple(output[0].contiguous() for output in (outputs.coarse_segm, outputs.fine_segm, outputs.u, outputs.v))
            clock.lap("densepose_head")
            charts = charts_to_box(*raw, boxes[0])
            clock.lap("resampling")
        return DensePoseRun(proposals, logits, boxes, scores, raw, charts, (rgb.width, rgb.height))

    def __call__(self, photo: ImageSource) -> DensePoseResult:
        """The IUV map of the most confident person; raises :class:`NoPersonFound` when there is none."""
        return self.result(self.run(photo))

    def result(self, run: DensePoseRun) -> DensePoseResult:
        """The :class:`DensePoseResult` of a :meth:`run` (raises :class:`NoPersonFound` when it found nobody)."""
        if run.charts is None:
            raise NoPersonFound()
        num_people = len(run.boxes)
        return DensePoseResult(
            map=iuv_map(run.charts, run.photo_size),
            box=tuple(float(value) for value in run.boxes[0].tolist()),
            score=float(run.scores[0]),
            num_people=num_people,
            weights=self.weights,
            note=people_note(num_people),
        )


# --- loading ---------------------------------------------------------------------------------------


def build_model(config: DensePoseConfig, state: dict[str, torch.Tensor]) -> DensePoseRCNN:
    """The model with ``state`` (already checked) assigned; built on the meta device (no init work).

    ``torch.device("meta")`` is a thread-local context, so concurrent builds in other threads are
    not affected (unlike ``accelerate.init_empty_weights``).
    """
    with torch.device("meta"):
        model = DensePoseRCNN(config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"DensePose checkpoint does not fit the model: {error}") from None
    return model.eval()


def load_checkpoint_model(path: str | Path, *, cache: bool = True) -> DensePoseRCNN:
    """Read, check strictly and load a model-zoo ``.pkl`` (or its safetensors conversion)."""
    path = Path(path)
    tensors = read_checkpoint(path)
    state = check_state_dict(tensors, expected_shapes(), source=f"checkpoint {path}")
    if cache and path.suffix != ".safetensors":
        cache_conversion(path, state)
    return build_model(REAL_CONFIG, state)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_densepose(weights: str | Path | None = None, *, device: str | None = None,
                   revision: str | None = None) -> DensePoseEstimator:
    """The real model: ``weights`` None downloads the pinned Hub file into ``weights/densepose/``;
    a path loads a local model-zoo ``.pkl`` (or its ``.safetensors`` conversion)."""
    if weights is None:
        pinned = revision or DENSEPOSE_REVISION
        if pinned == UNPINNED_REVISION_PLACEHOLDER:
            logger.warning("No commit of %s is pinned for the DensePose checkpoint: downloading %r.",
                           DENSEPOSE_REPO_ID, FALLBACK_BRANCH)
            pinned = FALLBACK_BRANCH
        path = hub_file(DENSEPOSE_REPO_ID, DENSEPOSE_FILENAME, revision=pinned, subfolder=DENSEPOSE_WEIGHTS_SUBFOLDER)
        source = f"{DENSEPOSE_REPO_ID}@{pinned}:{DENSEPOSE_FILENAME}"
    else:
        path = Path(weights).expanduser()
        source = str(path)
    model = load_checkpoint_model(path)
    return DensePoseEstimator(model, weights=source, device=device or default_device())


_default_estimator: DensePoseEstimator | None = None
_default_lock = threading.Lock()


def get_densepose_estimator() -> DensePoseEstimator:
    """The process-wide estimator (downloads and loads the real model on first use; thread-safe)."""
    global _default_estimator
    with _default_lock:
        if _default_estimator is None:
            _default_estimator = load_densepose()
        return _default_estimator


def densepose_map(photo: ImageSource, estimator: DensePoseEstimator | None = None) -> DensePoseResult:
    """The DensePose IUV map of the most confident person in ``photo`` (see :class:`DensePoseResult`)."""
    return (estimator or get_densepose_estimator())(photo)
