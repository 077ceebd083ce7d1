"""What the read members of a candidate show, before it is offered: which parts are visible (the coverage of
their masks) and whether its DensePose map shows a body. An empty-mask part is never offered (generation
refuses it) and a blank or near-blank map never becomes a pose; a damaged or missing member makes the whole
candidate unusable (it is named, and a spare takes its place)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
from PIL import Image

from preprocess.images import mask_coverage

from ..core.dataset_layout import BODY_PIXEL_LEVEL, MIN_BODY_SHARE, MIN_PART_COVERAGE
from .index import Sample
from .zips import MemberReads, archive_of, decode_image

#: Fewest visible parts an example needs (a set is the parts of a person: one part alone is not an example).
MIN_VISIBLE_PARTS = 2


def body_share(image: Image.Image) -> float:
    """Share (0..1) of a DensePose map's pixels that are body (not background: any channel above
    BODY_PIXEL_LEVEL)."""
    pixels = np.asarray(image.convert("RGB"))
    return float((pixels.max(axis=2) > BODY_PIXEL_LEVEL).mean()) if pixels.size else 0.0


def is_blank_map(image: Image.Image) -> bool:
    """True for a blank or near-blank DensePose map (DensePose found nobody): fewer than MIN_BODY_SHARE body
    pixels (parts2whole.core.dataset_layout)."""
    return body_share(image) < MIN_BODY_SHARE


@dataclasses.dataclass
class CandidateCheck:
    """What a candidate's masks and map showed: the visible parts (label -> mask coverage), the parts whose
    mask is empty, and why it cannot be offered at all ("" when it can)."""

    visible: dict[str, float]
    empty: list[str]
    problem: str = ""
    problem_kind: str = ""  # "damaged", "blank map" or "too few parts"

    def attributes(self) -> dict[str, str]:
        """hair and shoes: "yes" when their part is visible, by mask coverage."""
        return {"hair": "yes" if "hair or headwear" in self.visible else "no",
                "shoes": "yes" if "shoes" in self.visible else "no"}


def check_candidate(sample: Sample, reads: MemberReads, unusable: Iterable[str] = ()) -> CandidateCheck:
    """Decode the candidate's masks and DensePose map from `reads` and say what they show. A part whose
    archive is `unusable` (missing, not a zip: the same for every candidate) is not offered; any other
    member that cannot be read makes the candidate unusable."""
    visible, empty = {}, []
    unusable = set(unusable)
    try:
        pose = decode_image(reads.member_bytes(sample.densepose), f"DensePose map of {sample.target_id}")
        for label in sample.usable_labels:
            if archive_of(sample.masks[label])[0] in unusable or archive_of(sample.parts[label])[0] in unusable:
                continue
            mask = decode_image(reads.member_bytes(sample.masks[label]), f"{label} mask of {sample.target_id}")
            coverage = mask_coverage(mask)
            if coverage >= MIN_PART_COVERAGE:
                visible[label] = round(coverage, 4)
            else:
                empty.append(label)
    except (ValueError, KeyError) as error:
        return CandidateCheck(visible, empty, str(error).strip("'\""), "damaged")
    if is_blank_map(pose):
        return CandidateCheck(visible, empty, f"the DensePose map of {sample.target_id} is blank", "blank map")
    if len(visible) < MIN_VISIBLE_PARTS:
        return CandidateCheck(visible, empty, f"{sample.target_id} shows {len(visible)} part(s)", "too few parts")
    return CandidateCheck(visible, empty)
