"""One call for a part's first mask: the parser, else pose-seeded Segment Anything, else "click".

The policy, in order:

1. The human parser (:mod:`preprocess.parsing`) finds the part with confidence -> its mask.
2. It finds nothing or is unsure -> DWPose (:mod:`preprocess.pose`) gives keypoints of the main
   person, :func:`~preprocess.pose.seed_points_for_part` turns them into clicks, and SAM
   (:mod:`preprocess.sam`) segments from those clicks (plus the unsure parser mask's box).
3. No keypoints either (or the DWPose/SAM weights cannot be had: logged) -> the parser's (unsure)
   mask if there is one, else an empty mask and the message "No <part> found in this image. Click on it ...".

Every result carries the :class:`~preprocess.sam.ClickState` the UI keeps in ``gr.State``, so the
user's next click refines this mask instead of starting from nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from parts2whole.core.errors import CheckpointError
from parts2whole.core.labels import canonical_label

from .images import ImageSource, flatten_alpha, is_empty_mask, load_image, pixel_hash
from .parsing import HumanParser, auto_part_mask, get_parser
from .pose import WholeBodyPoseEstimator, estimate_pose, seed_points_for_part
from .sam import ClickState, SamSegmenter, click_state_from_mask, get_segmenter

PartSource = Literal["parser", "pose+sam", "none"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PartSelection:
    """A part's suggested mask (``L``, image size), where it came from, and the state to refine it."""

    label: str
    mask: Image.Image
    source: PartSource
    state: ClickState
    message: str | None = None

    @property
    def found(self) -> bool:
        return self.source != "none"


def pose_selected_message(label: str) -> str:
    return f"The {canonical_label(label)} was selected from the body pose. Check it and click to fix it."


def select_part(
    image: ImageSource,
    label: str,
    *,
    parser: HumanParser | None = None,
    segmenter: SamSegmenter | None = None,
    pose_estimator: WholeBodyPoseEstimator | None = None,
    use_pose_fallback: bool = True,
) -> PartSelection:
    """The first mask of part ``label`` in ``image`` (see the module docstring for the policy)."""
    part = canonical_label(label)
    rgb = flatten_alpha(load_image(image, what="photo"))
    key = pixel_hash(rgb)
    parsed = auto_part_mask(rgb, part, parser or get_parser())
    if parsed.found and not parsed.unsure:
        return PartSelection(part, parsed.mask, "parser", click_state_from_mask(parsed.mask, key))

    if use_pose_fallback:
        try:
            seeded = _pose_seeded_selection(rgb, key, part, parsed.mask if parsed.found else None, segmenter, pose_estimator)
        except CheckpointError as error:  # DWPose or SAM weights unavailable: the parser's answer still stands
            logger.warning("Pose-seeded %s selection unavailable: %s", part, error)
            seeded = None
        if seeded is not None:
            return seeded

    if parsed.found:
        return PartSelection(part, parsed.mask, "parser", click_state_from_mask(parsed.mask, key), parsed.message)
    return PartSelection(part, parsed.mask, "none", ClickState(image_key=key), parsed.message)


def _pose_seeded_selection(
    rgb: Image.Image,
    key: str,
    part: str,
    parser_mask: Image.Image | None,
    segmenter: SamSegmenter | None,
    pose_estimator: WholeBodyPoseEstimator | None,
) -> PartSelection | None:
    """SAM from the main person's seed clicks (plus the parser mask's box); None when that selects nothing."""
    person = estimate_pose(rgb, pose_estimator).main_person()
    seeds = () if person is None else seed_points_for_part(person, part)
    if not seeds:
        return None
    box = click_state_from_mask(parser_mask).box if parser_mask is not None else None
    result = (segmenter or get_segmenter()).predict(rgb, ClickState(image_key=key, clicks=tuple(seeds), box=box))
    if is_empty_mask(result.mask):
        return None
    return PartSelection(part, result.mask, "pose+sam", result.state, pose_selected_message(part))
