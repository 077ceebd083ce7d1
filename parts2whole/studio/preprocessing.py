"""Preprocessing for the app: automatic part masks, click-to-refine, background removal, pose from a photo.

One :class:`PreprocessingService` per studio holds the shared models (human parser, Segment Anything,
DWPose, DensePose, rembg), each loaded once, lazily, under a lock. Nothing per user lives here: click prompts
(:class:`~preprocess.sam.ClickState`) travel in and out of every call (the app keeps them in
``gr.State``), and SAM image embeddings sit in the segmenter's bounded cache keyed by pixel content.

Weights, like the diffusion model's: with the real model the preprocessing weights download on first
use (Hub ids in ``preprocess``); when the studio runs the tiny model (``--weights tiny``, or the Hub was
unreachable) or a download fails, tiny stand-ins are built once into ``weights/tiny-preprocess/``
(:mod:`preprocess.tiny`) and used instead, and :attr:`PreprocessingService.fallbacks` says why.

Pose from a photo draws the kind of map the loaded model reads (:meth:`PreprocessingService.pose_from_photo`):
a DensePose IUV map (:mod:`preprocess.densepose`) for the released checkpoint, which was trained on
DensePose maps, and an OpenPose-style DWPose skeleton for a checkpoint whose ``parts2whole.json`` says
``"structure_kind": "openpose"``. :func:`make_pose_map` does the work for given estimators (the CLI uses it
without a service).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from preprocess.background import BackgroundRemover
from preprocess.images import flatten_alpha, load_rgb, pixel_hash
from preprocess.parsing import HumanParser
from preprocess.parts import select_part
from preprocess.pose import DWPOSE_REPO_ID, DWPOSE_REVISION, WholeBodyPoseEstimator, estimate_pose, render_pose_map
from preprocess.sam import ClickState, SamSegmenter, click_state_from_mask
from preprocess.structure import structure_kind_of

from ..core.errors import CheckpointError, Parts2WholeInputError
from ..core.weights import weights_dir

logger = logging.getLogger("parts2whole.preprocessing")

TINY_PREPROCESS_DIR_NAME = "tiny-preprocess"
PARSER, SEGMENTER, POSE, BACKGROUND = "human parser", "Segment Anything", "DWPose", "background remover"
DENSEPOSE = "DensePose"
#: Pose map kinds made from a photo, and the tool that makes each.
DENSEPOSE_KIND, OPENPOSE_KIND = "densepose", "openpose"
POSE_TOOLS = {DENSEPOSE_KIND: DENSEPOSE, OPENPOSE_KIND: POSE}
TINY_PREPROCESS_NOTE = (
    "Preprocessing (automatic masks, clicks, background removal, pose from a photo) also runs on "
    "**tiny random models**: its masks and skeletons are rough placeholders."
)
#: Longest side of pose maps made from photos when no output size is given.
POSE_MAP_MAX_SIDE = 768
#: How much the photo is darkened under the skeleton preview (0 = not at all).
POSE_PREVIEW_DIM = 0.55
#: Weight of the DensePose map where it covers the photo in the preview (1 = the map alone): enough photo
#: shows through to check that the parts sit on the body.
DENSEPOSE_PREVIEW_OPACITY = 0.65
POSITIVE_COLOUR, NEGATIVE_COLOUR, BOX_COLOUR = (22, 163, 74), (220, 38, 38), (37, 99, 235)

ClickMode = str  # "include", "exclude" or "box"
INCLUDE, EXCLUDE, BOX = "include", "exclude", "box"


@dataclasses.dataclass(frozen=True)
class MaskSuggestion:
    """A part's mask (``L``, image size), where it came from, the prompts behind it and a note for people."""

    mask: Image.Image
    source: str  # "automatic", "from the body pose", "not found", "clicks", "box", "background removed"
    clicks: Any  # preprocess.sam.ClickState
    message: str | None = None
    corner: tuple[float, float] | None = None  # first corner of a box being drawn


@dataclasses.dataclass(frozen=True)
class PoseFromPhoto:
    pose_map: Image.Image  # the map the model gets (RGB, black background): DensePose IUV or OpenPose-style
    preview: Image.Image  # the map over the (darkened) photo, photo-sized
    keypoints: dict | None  # PoseResult.to_json() (DWPose); None for DensePose
    people: int
    kind: str = OPENPOSE_KIND  # "densepose" or "openpose"
    #: How the map was made, for the bundle and the CLI's JSON: kind, tool, weights, photo and map sizes,
    #: and for DensePose the person's box (x0, y0, x1, y1 in photo pixels) and its score.
    details: dict = dataclasses.field(default_factory=dict)
    note: str | None = None  # e.g. "3 people found: the map shows the most confident one."


def _quietly(fn: Callable, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - a prefetch is an optimisation; the click computes it again
        logger.debug("prefetch failed", exc_info=True)


def _structure_kind_name(kind: str) -> str:
    return {"densepose": "DensePose", "openpose": "OpenPose-style"}.get(kind, kind)


def fit_map(pose_map: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[float, float, float]]:
    """`pose_map` inside a black map of `size` = (height, width), keeping its aspect, centred; and the
    (scale, offset x, offset y) that place map pixels. The same fit DWPose skeletons get
    (:func:`preprocess.pose.render_pose_map`), so both kinds line up with the photo the same way.

    Resampled with NEAREST on purpose: every pixel of a DensePose map is one (part, U, V) triple of the model;
    blending neighbours would invent part indices between two parts (I = 2 next to I = 14 is not I = 8).
    The pipeline then resizes the map to the output once, with LANCZOS, as the official code does.
    """
    height, width = int(size[0]), int(size[1])
    scale = min(width / pose_map.width, height / pose_map.height)
    inner = (max(1, round(pose_map.width * scale)), max(1, round(pose_map.height * scale)))
    left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(pose_map.convert("RGB").resize(inner, Image.Resampling.NEAREST), (left, top))
    return canvas, (inner[0] / pose_map.width, float(left), float(top))


def densepose_preview(photo: Image.Image, iuv: Image.Image, box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """The photo-sized IUV map blended over the darkened photo where it covers the person, and the box."""
    rgb = photo.convert("RGB")
    dimmed = Image.blend(rgb, Image.new("RGB", rgb.size, (0, 0, 0)), POSE_PREVIEW_DIM)
    covered = Image.fromarray((np.asarray(iuv.convert("RGB")).max(axis=2) > 0).astype(np.uint8) * 255)
    preview = Image.composite(Image.blend(rgb, iuv.convert("RGB"), DENSEPOSE_PREVIEW_OPACITY), dimmed, covered)
    if box is not None:
        ImageDraw.Draw(preview).rectangle(box, outline=BOX_COLOUR, width=max(2, round(min(rgb.size) / 200)))
    return preview


def _round_box(box) -> list[float]:
    return [round(float(value), 2) for value in box]


def make_pose_map(photo: Image.Image, kind: str, size: tuple[int, int] | None = None, *, densepose=None,
                  dwpose=None, dwpose_weights: str | None = None) -> PoseFromPhoto:
    """A pose map of `kind` made from `photo` with the given estimator, fitted to `size` = (height, width).

    * ``"densepose"`` (`densepose`: a :class:`preprocess.densepose.DensePoseEstimator`): the IUV map of the
      most confident person, in the training data's encoding. Without `size` it stays photo-sized (its
      pixels then match the box); with `size` it is fitted by :func:`fit_map` (aspect kept, centred on black).
      No person: :class:`preprocess.densepose.NoPersonFound` (a :class:`Parts2WholeInputError`).
    * ``"openpose"`` (`dwpose`: a :class:`preprocess.pose.WholeBodyPoseEstimator`): every person's DWPose
      keypoints drawn as an OpenPose-style map at `size` (default: the photo's aspect, longest side
      :data:`POSE_MAP_MAX_SIDE`), fitted the same way.

    The preview is photo-sized: the map over the darkened photo.
    """

    rgb = load_rgb(photo, what="photo")  # upright (EXIF orientation applied), transparency on white
    if kind == DENSEPOSE_KIND:
        result = densepose(rgb)
        pose_map, (scale, left, top) = (result.map.convert("RGB"), (1.0, 0.0, 0.0)) if size is None else \
            fit_map(result.map, size)
        details = {"kind": DENSEPOSE_KIND, "from_photo": True, "tool": DENSEPOSE, "weights": str(result.weights),
                   "box": _round_box(result.box), "score": round(float(result.score), 4),
                   "people_found": int(result.num_people), "photo_size": list(rgb.size),
                   "map_size": list(pose_map.size),
                   "box_in_map": _round_box((result.box[0] * scale + left, result.box[1] * scale + top,
                                             result.box[2] * scale + left, result.box[3] * scale + top))}
        return PoseFromPhoto(pose_map, densepose_preview(rgb, result.map, result.box), None, int(result.num_people),
                             DENSEPOSE_KIND, details, result.note)
    if kind != OPENPOSE_KIND:
        raise Parts2WholeInputError(f"Unknown pose map kind {kind!r}: use densepose or openpose.")

    if size is None:
        scale = POSE_MAP_MAX_SIDE / max(rgb.size)
        size = (max(8, round(rgb.height * scale)), max(8, round(rgb.width * scale)))
    pose = estimate_pose(rgb, dwpose)
    if not pose.found:
        raise Parts2WholeInputError("No person found in this photo: try a photo where the whole body is visible.")
    skeleton = render_pose_map(pose, (rgb.height, rgb.width))
    drawn = Image.fromarray((np.asarray(skeleton).max(axis=2) > 0).astype(np.uint8) * 255)
    dimmed = Image.blend(rgb, Image.new("RGB", rgb.size, (0, 0, 0)), POSE_PREVIEW_DIM)
    preview = Image.composite(skeleton, dimmed, drawn)
    pose_map = render_pose_map(pose, size)
    people = len(pose.people)
    details = {"kind": OPENPOSE_KIND, "from_photo": True, "tool": POSE,
               "weights": dwpose_weights or f"{DWPOSE_REPO_ID}@{DWPOSE_REVISION}", "box": None, "score": None,
               "people_found": people, "photo_size": list(rgb.size), "map_size": list(pose_map.size)}
    note = f"{people} people found: all are drawn." if people > 1 else None
    return PoseFromPhoto(pose_map, preview, pose.to_json(), people, OPENPOSE_KIND, details, note)


class _Lazy:
    """Stands for a model that is only loaded when first used (select_part needs SAM and DWPose only
    when the parser is unsure)."""

    def __init__(self, getter: Callable[[], Any]):
        self._getter = getter

    def __getattr__(self, name: str):
        return getattr(self._getter(), name)


class PreprocessingService:
    """The preprocessing models shared by every user of one app (thread-safe, no per-user state)."""

    def __init__(self, studio, *, tiny_folder: str | Path | None = None, device: str | None = None,
                 densepose_weights: str | Path | None = None):
        self.studio = studio
        self._tiny_folder = Path(tiny_folder) if tiny_folder is not None else None
        self._device = device
        #: A local DensePose checkpoint (model-zoo .pkl) to use instead of the pinned download; never replaced
        #: by the tiny stand-in (a bad file is an error, not a silent placeholder).
        self._densepose_weights = densepose_weights
        self._models: dict[str, Any] = {}
        self._locks = {name: threading.Lock() for name in (PARSER, SEGMENTER, POSE, BACKGROUND, DENSEPOSE)}
        self._tiny_lock = threading.Lock()
        self._prefetcher: ThreadPoolExecutor | None = None
        #: Tools running on a tiny stand-in because their real weights could not be had, and why.
        self.fallbacks: dict[str, str] = {}

    # -- which models

    @property
    def uses_tiny_models(self) -> bool:
        """True when every tool runs on tiny models from the start (the studio itself is tiny)."""
        return bool(self.studio.is_tiny)

    def banner_note(self) -> str | None:
        return TINY_PREPROCESS_NOTE if self.uses_tiny_models else None

    @property
    def tiny_folder(self) -> Path:
        if self._tiny_folder is None:

            self._tiny_folder = weights_dir() / TINY_PREPROCESS_DIR_NAME
        return self._tiny_folder

    @property
    def device(self) -> str:
        if self._device is None:
            choice = self.studio.device_choice
            self._device = choice.device if choice.device.startswith("cuda") and not choice.zero_gpu else "cpu"
        return self._device

    def warm_up_in_background(self) -> threading.Thread | None:
        """With tiny models, build their files now (a few seconds, once) so the first upload is quick."""
        if not self.uses_tiny_models:
            return None

        def build():
            try:
                self._tiny_files()
            except Exception:  # noqa: BLE001 - the first tool use tries again and reports the error
                logger.exception("could not build the tiny preprocessing models")

        thread = threading.Thread(target=build, name="tiny-preprocess-build", daemon=True)
        thread.start()
        return thread

    def _tiny_files(self):
        from preprocess.tiny import ensure_tiny_preprocessing  # heavy (torch, diffusers): imported on first use, keeps importing the studio light

        with self._tiny_lock:
            return ensure_tiny_preprocessing(self.tiny_folder)

    def _model(self, name: str, real: Callable[[], Any], tiny: Callable[[Any], Any]) -> Any:
        model = self._models.get(name)
        if model is not None:
            return model
        with self._locks[name]:
            if name in self._models:
                return self._models[name]
            if self.uses_tiny_models:
                model = tiny(self._tiny_files())
            else:
                try:
                    model = real()
                except CheckpointError as error:
                    reason = " ".join(str(error).split())
                    logger.warning("%s weights unavailable (%s): using a tiny stand-in from %s.", name, reason,
                                   self.tiny_folder)
                    self.fallbacks[name] = reason
                    model = tiny(self._tiny_files())
            self._models[name] = model
            return model

    def parser(self):

        return self._model(PARSER, lambda: HumanParser.from_hub(device=self.device),
                           lambda files: HumanParser(files.parser, device=self.device))

    def segmenter(self):
        from preprocess.tiny import load_tiny_sam  # heavy (torch, diffusers): imported on first use, keeps importing the studio light

        def real():
            segmenter = SamSegmenter.from_hub(device=self.device)
            segmenter.prepare_decoder()
            return segmenter

        return self._model(SEGMENTER, real, lambda files: load_tiny_sam(files.sam, device=self.device))

    def pose_estimator(self):

        return self._model(POSE, WholeBodyPoseEstimator.from_hub,
                           lambda files: WholeBodyPoseEstimator(files.detector, files.pose))

    def densepose_estimator(self):
        """DensePose R50-FPN: the pinned download, `densepose_weights` when given, or the tiny stand-in."""
        from preprocess.densepose import load_densepose, load_tiny_densepose  # heavy (torch, diffusers): imported on first use, keeps importing the studio light

        def tiny(_files):  # built once into the same folder as the other stand-ins (file-locked there)
            return load_tiny_densepose(self.tiny_folder, device=self.device)

        if self._densepose_weights is not None and DENSEPOSE not in self._models:
            with self._locks[DENSEPOSE]:
                if DENSEPOSE not in self._models:
                    self._models[DENSEPOSE] = load_densepose(self._densepose_weights, device=self.device)
        return self._model(DENSEPOSE, lambda: load_densepose(device=self.device), tiny)

    def background_remover(self):
        from preprocess.tiny import tiny_background_remover  # heavy (torch, diffusers): imported on first use, keeps importing the studio light

        def real():
            remover = BackgroundRemover()
            remover.session  # noqa: B018 - load (and download) now, so a failure can fall back
            return remover

        return self._model(BACKGROUND, real, lambda files: tiny_background_remover(files.background))

    def fallback_note(self, *names: str) -> str | None:
        """One line for the UI when any of `names` runs on a tiny stand-in after a failed download."""
        failed = [name for name in names if name in self.fallbacks]
        if not failed:
            return None
        return (f"The {' and '.join(failed)} weights could not be downloaded, so a tiny placeholder model "
                "answered (rough result). Check the network and restart the app.")

    # -- masks

    def auto_mask(self, image: Image.Image, label: str) -> MaskSuggestion:
        """The part's first mask: the parser, else pose-seeded SAM, else "click on it" (preprocess.parts)."""

        selection = select_part(image, label, parser=self.parser(), segmenter=_Lazy(self.segmenter),
                                pose_estimator=_Lazy(self.pose_estimator))
        source = {"parser": "automatic", "pose+sam": "from the body pose", "none": "not found"}[selection.source]
        return MaskSuggestion(selection.mask, source, selection.state, selection.message)

    def prefetch_embedding(self, image: Image.Image) -> None:
        """Encode `image` for Segment Anything in the background (one at a time), so the first click on it
        only runs the small decoder. Only when SAM is already loaded: this never starts a download."""
        segmenter = self._models.get(SEGMENTER)
        if segmenter is None:
            return
        with self._tiny_lock:
            if self._prefetcher is None:
                self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-prefetch")
        self._prefetcher.submit(_quietly, segmenter.embed, image)

    def start_state(self, image: Image.Image, mask: Image.Image | None = None):
        """Prompts for `image` with nothing clicked yet; with `mask`, its box (so clicks refine it)."""

        key = pixel_hash(flatten_alpha(image))
        return ClickState(image_key=key) if mask is None else click_state_from_mask(mask, key)

    def click(self, image: Image.Image, clicks, x: float, y: float, mode: ClickMode,
              corner: tuple[float, float] | None = None) -> MaskSuggestion | None:
        """Add one click (include / exclude a point, or a box corner) and predict the new mask.

        Returns None for the first corner of a box (nothing to predict yet: the caller keeps `corner`).
        """
        width, height = image.size
        if not (0 <= x <= width and 0 <= y <= height):
            raise Parts2WholeInputError(f"The click ({x:.0f}, {y:.0f}) is outside the {width}×{height} picture.")
        clicks = clicks if clicks is not None else self.start_state(image)
        if mode == BOX:
            if corner is None:
                return None
            clicks = clicks.with_box((corner[0], corner[1], x, y))
        elif mode in (INCLUDE, EXCLUDE):
            clicks = clicks.add_click(x, y, positive=mode == INCLUDE)
        else:
            raise Parts2WholeInputError(f"Unknown click mode {mode!r}; use include, exclude or box.")
        return self.predict(image, clicks, "box" if mode == BOX else "clicks")

    def predict(self, image: Image.Image, clicks, source: str = "clicks") -> MaskSuggestion:
        result = self.segmenter().predict(image, clicks)
        return MaskSuggestion(result.mask, source, result.state)

    def remove_background(self, image: Image.Image) -> Image.Image:
        """RGBA copy of `image` whose alpha is the subject (soft edges)."""
        return self.background_remover().remove_background(image)

    # -- pose

    def pose_from_photo(self, photo: Image.Image, size: tuple[int, int] | None = None,
                        kind: str | None = None) -> PoseFromPhoto:
        """A pose map of `photo` of the kind the model reads (`kind` overrides: "densepose" or "openpose"),
        fitted to `size` = (height, width) (see :func:`make_pose_map`), and a preview over the photo.

        With no `kind`, :meth:`expected_structure_kind` decides: the released checkpoint reads DensePose
        maps; a fine-tuned checkpoint's ``parts2whole.json`` may say OpenPose.
        """
        kind = kind or self.expected_structure_kind()
        if kind == DENSEPOSE_KIND:
            return make_pose_map(photo, DENSEPOSE_KIND, size, densepose=self.densepose_estimator())
        if kind == OPENPOSE_KIND:
            return make_pose_map(photo, OPENPOSE_KIND, size, dwpose=self.pose_estimator(),
                                 dwpose_weights="tiny" if self._is_tiny_tool(POSE) else None)
        raise Parts2WholeInputError(f"Unknown pose map kind {kind!r}: use densepose or openpose.")

    def _is_tiny_tool(self, name: str) -> bool:
        return self.uses_tiny_models or name in self.fallbacks

    def structure_kind_of(self, image: Image.Image) -> str:

        return structure_kind_of(image)

    def expected_structure_kind(self) -> str:
        """What the model's pose guider reads: the loaded pipeline's `structure_kind`, else what the
        checkpoint folder declares (without loading the model)."""
        if self.studio.is_loaded:
            return self.studio.structure_kind()
        from ..model.loading import read_structure_kind  # heavy (torch, diffusers): imported on first use, keeps importing the studio light

        return read_structure_kind(self.studio.weights.path)

    def structure_note(self, kind: str, *, from_photo: bool = False) -> str:
        """Markdown telling people what kind of pose map they gave and whether the model reads it."""
        expected = self.expected_structure_kind()
        name, wanted = _structure_kind_name(kind), _structure_kind_name(expected)
        origin = f"made from your photo with {POSE_TOOLS.get(kind, POSE)}" if from_photo else "uploaded"
        if kind == expected:
            return f"✓ **{name} map** ({origin}): the kind this model was trained on."
        if kind == "unknown":
            return ("⚠️ **This does not look like a pose map** (a photo?). Use *Make a pose map from a photo*, "
                    f"or upload a {wanted} map.")
        return (f"⚠️ **{name} map** ({origin}): a different kind of pose map. This model was trained on "
                f"**{wanted}** maps, so expect the pose to be followed loosely.")

    # -- drawing

    @staticmethod
    def draw_prompts(preview: Image.Image, clicks, scale: float, corner: tuple[float, float] | None = None) -> Image.Image:
        """`preview` (the image scaled by `scale`) with the clicks as green/red dots and the box outlined."""
        if clicks is None and corner is None:
            return preview
        marked = preview.convert("RGB").copy()
        draw = ImageDraw.Draw(marked)
        radius = max(4, round(min(marked.size) / 45))
        for click in getattr(clicks, "clicks", ()):
            x, y = click.x * scale, click.y * scale
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=POSITIVE_COLOUR if click.positive
                         else NEGATIVE_COLOUR, outline=(255, 255, 255), width=max(1, radius // 3))
        box = getattr(clicks, "box", None)
        if box is not None:
            draw.rectangle(tuple(value * scale for value in box), outline=BOX_COLOUR, width=max(2, radius // 2))
        if corner is not None:
            x, y = corner[0] * scale, corner[1] * scale
            draw.line((x - 2 * radius, y, x + 2 * radius, y), fill=BOX_COLOUR, width=max(2, radius // 2))
            draw.line((x, y - 2 * radius, x, y + 2 * radius), fill=BOX_COLOUR, width=max(2, radius // 2))
        return marked
