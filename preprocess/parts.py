"""One call for a part's first mask: the parser, else pose-seeded Segment Anything, else "click".

The policy, in order:

1. The human parser (:mod:`preprocess.parsing`) finds the part with confidence -> its mask.
2. It finds nothing or is unsure -> DWPose (:mod:`preprocess.pose`) gives keypoints of the main
   person, :func:`~preprocess.pose.seed_points_for_part` turns them into clicks, and SAM
   (:mod:`preprocess.sam`) segments from those clicks (plus the unsure parser mask's box).
3. No keypoints either -> the parser's (unsure) mask if there is one, else an empty mask and the
   message "No <part> found in this image. Click on it ...".

Every result carries the :class:`~preprocess.sam.ClickState` the UI keeps in ``gr.State``, so the
user's next click refines this mask instead of starting from nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

from parts2whole.labels import canonical_label

from .images import ImageSource, flatten_alpha, is_empty_mask, load_image, pixel_hash
from .parsing import HumanParser, auto_part_mask, get_parser
from .pose import WholeBodyPoseEstimator, estimate_pose, seed_points_for_part
from .sam import ClickState, SamSegmenter, click_state_from_mask, get_segmenter

PartSource = Literal["parser", "pose+sam", "none"]


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
        person = estimate_pose(rgb, pose_estimator).main_person()
        seeds = () if person is None else seed_points_for_part(person, part)
        if seeds:
            start = click_state_from_mask(parsed.mask, key) if parsed.found else ClickState(image_key=key)
            start = ClickState(image_key=key, clicks=tuple(seeds), box=start.box)
            result = (segmenter or get_segmenter()).predict(rgb, start)
            if not is_empty_mask(result.mask):
                return PartSelection(part, result.mask, "pose+sam", result.state, pose_selected_message(part))

    if parsed.found:
        return PartSelection(part, parsed.mask, "parser", click_state_from_mask(parsed.mask, key), parsed.message)
    return PartSelection(part, parsed.mask, "none", ClickState(image_key=key), parsed.message)
