"""Which kind of structure (pose) map is this: DensePose, OpenPose, or something else?

The released Parts2Whole checkpoint reads DensePose renderings (coloured body-part blobs on
black); an OpenPose skeleton (thin coloured lines and dots on black) or a photo fed in its place
gives poor results without an error. :func:`structure_kind_of` lets the UI warn about that.

Heuristic (on a copy scaled to a short side of :data:`ANALYSIS_SIDE` px):

1. Mostly black: at least :data:`MIN_DARK_FRACTION` of the pixels have every channel below
   :data:`DARK_LEVEL`. Photos, sketches on white, depth maps fail this -> ``"unknown"``.
2. Something drawn: at least :data:`MIN_FOREGROUND_FRACTION` of pixels are not dark, else
   ``"unknown"`` (a blank map).
3. Colourful: at least :data:`MIN_SATURATED_FRACTION` of the drawn pixels are saturated colours
   (HSV saturation >= :data:`SATURATION_LEVEL`), else ``"unknown"`` (a grey silhouette, a
   white-on-black mask, a night photo).
4. Thickness: twice the median distance from a drawn pixel to the black background, relative to
   the short side. OpenPose strokes are ~8 px at 512 px (about 0.01); DensePose limbs and torso
   are tens of pixels (0.03 and up). Below :data:`THIN_STROKE_LIMIT` -> ``"openpose"``, else
   ``"densepose"``.

Limits: a DensePose map of a tiny, far-away person has thin limbs and can read as OpenPose; an
OpenPose map drawn with very thick strokes (or upscaled without adapting stroke width) can read
as DensePose; a colourful cartoon on a black background reads as DensePose. It is a warning aid,
not a validator: the UI should say "this looks like an OpenPose map" and still let the user go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from .images import ImageSource, flatten_alpha, load_image

StructureKind = Literal["densepose", "openpose", "unknown"]

#: Short side of the analysed copy: makes the measures independent of the map's resolution.
ANALYSIS_SIDE = 256
#: A pixel is "black" when all channels are below this.
DARK_LEVEL = 40
#: Fraction of black pixels a structure map has at least (DensePose maps are ~60-90 % black).
MIN_DARK_FRACTION = 0.4
#: Fraction of drawn pixels below which the map is blank.
MIN_FOREGROUND_FRACTION = 0.002
#: HSV saturation (0..1) from which a drawn pixel counts as a colour rather than grey/white.
SATURATION_LEVEL = 0.35
#: Fraction of drawn pixels that must be colours.
MIN_SATURATED_FRACTION = 0.5
#: Relative stroke thickness separating OpenPose lines from DensePose blobs.
THIN_STROKE_LIMIT = 0.022


@dataclass(frozen=True)
class StructureFeatures:
    """The measures the heuristic decides on (exposed for tests and for tuning)."""

    dark_fraction: float
    foreground_fraction: float
    saturated_fraction: float
    relative_thickness: float


def structure_features(image: ImageSource) -> StructureFeatures:
    """Measure darkness, drawn area, colourfulness and stroke thickness of a map."""
    import cv2  # heavy: imported on first use, keeps importing this package light

    rgb = flatten_alpha(load_image(image, what="pose map"), background=(0, 0, 0))
    scale = ANALYSIS_SIDE / min(rgb.size)
    size = (max(1, round(rgb.size[0] * scale)), max(1, round(rgb.size[1] * scale)))
    pixels = np.asarray(rgb.resize(size, Image.Resampling.BOX)).astype(np.float32)
    brightest = pixels.max(axis=2)
    darkest = pixels.min(axis=2)
    foreground = brightest >= DARK_LEVEL
    foreground_fraction = float(foreground.mean())
    if not foreground.any():
        return StructureFeatures(1.0 - foreground_fraction, foreground_fraction, 0.0, 0.0)
    saturation = (brightest - darkest) / np.maximum(brightest, 1.0)
    saturated_fraction = float((saturation[foreground] >= SATURATION_LEVEL).mean())
    # A black frame keeps distances finite when the drawing touches (or fills) the whole image.
    framed = np.pad(foreground, 1).astype(np.uint8)
    distance = cv2.distanceTransform(framed, cv2.DIST_L2, 3)[1:-1, 1:-1]
    relative_thickness = float(2.0 * np.median(distance[foreground].astype(np.float64)) / min(size))
    return StructureFeatures(1.0 - foreground_fraction, foreground_fraction, saturated_fraction, relative_thickness)


def classify_structure(features: StructureFeatures) -> StructureKind:
    """The decision rules of the module docstring, on measured features."""
    if features.dark_fraction < MIN_DARK_FRACTION or features.foreground_fraction < MIN_FOREGROUND_FRACTION:
        return "unknown"
    if features.saturated_fraction < MIN_SATURATED_FRACTION:
        return "unknown"
    return "openpose" if features.relative_thickness < THIN_STROKE_LIMIT else "densepose"


def structure_kind_of(image: ImageSource) -> StructureKind:
    """``"densepose"``, ``"openpose"`` or ``"unknown"`` for a structure map (see the module docstring)."""
    return classify_structure(structure_features(image))
