"""Mask post-processing shared by the parser and Segment Anything: clean-up, boxes, conversions.

Masks are handled as boolean numpy arrays (``True`` = part) inside the library and as ``L`` PIL
images (255 = part) at the edges, because the UI and the pipeline take images.
Parser and SAM masks both come with speckles (a few stray pixels of "shoe" on a shadow) and pin
holes (a logo classified as background); the clean-up below removes both, by area, so a real thin
part (a belt, a strap) is kept.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Regions smaller than this fraction of the image are dropped as speckles by :func:`clean_mask`.
SPECKLE_FRACTION = 0.0005
#: Holes smaller than this fraction of the image are filled by :func:`clean_mask`.
HOLE_FRACTION = 0.0005
#: 8-connectivity: diagonal neighbours belong to the same region (thin diagonal straps survive).
CONNECTIVITY = 8


def mask_to_image(mask: np.ndarray) -> Image.Image:
    """Boolean (H, W) array -> ``L`` image with 0 / 255."""
    return Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * np.uint8(255))


def image_to_mask(image: Image.Image, threshold: int = 127) -> np.ndarray:
    """``L`` (or any mode, via luminance) image -> boolean (H, W) array of pixels above ``threshold``."""
    grey = image if image.mode == "L" else image.convert("L")
    return np.asarray(grey) > threshold


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected regions of ``mask`` with fewer than ``min_area`` pixels."""
    import cv2  # heavy: imported on first use, keeps importing this package light

    mask = np.asarray(mask, dtype=bool)
    if min_area <= 1 or not mask.any():
        return mask.copy()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=CONNECTIVITY)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background regions enclosed by ``mask`` (not touching the border) of at most ``max_area`` pixels."""
    import cv2  # heavy: imported on first use, keeps importing this package light

    mask = np.asarray(mask, dtype=bool)
    if max_area <= 0 or mask.all():
        return mask.copy()
    background = (~mask).astype(np.uint8)
    # Holes are 4-connected background regions, the dual of 8-connected foreground.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    height, width = mask.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right = left + stats[:, cv2.CC_STAT_WIDTH]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    touches_border = (left == 0) | (top == 0) | (right == width) | (bottom == height)
    fill = np.zeros(count, dtype=bool)
    fill[1:] = (stats[1:, cv2.CC_STAT_AREA] <= max_area) & ~touches_border[1:]
    return mask | fill[labels]


def clean_mask(mask: np.ndarray, speckle_fraction: float = SPECKLE_FRACTION, hole_fraction: float = HOLE_FRACTION) -> np.ndarray:
    """Remove speckles and fill pin holes, both sized relative to the image area."""
    mask = np.asarray(mask, dtype=bool)
    area = mask.size
    cleaned = remove_small_regions(mask, int(round(speckle_fraction * area)))
    return fill_small_holes(cleaned, int(round(hole_fraction * area)))


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of the mask's pixels, ``x1``/``y1`` exclusive; ``None`` for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
