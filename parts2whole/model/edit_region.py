"""The edit's region, in pixels only (PIL and numpy, no torch): what the studio checks before any model
loads and what the edit pipeline composites with.

A region is a mask at the source's size, white = change. It is thresholded once (`binary_region`), must
select something and leave something (`check_region_coverage`), and its edge is feathered over a band
of source pixels (`feathered_alpha`): alpha is 255 on the region, ramps down across the band, and is
exactly 0 beyond it, where the edit's output is the source's own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from ..core.errors import Parts2WholeInputError
from ..core.limits import EDIT_MAX_REGION_FRACTION, MIN_SIDE
from . import validation

#: The region's edge is blended over this many source pixels (outside the region): enough to hide the
#: seam of a latent cell (8 pixels), small enough to keep the rest of the photo untouched.
DEFAULT_FEATHER = 8
#: The widest feather accepted (pixels): past it the "kept" band stops being a band.
MAX_FEATHER = 64
#: A region pixel is "in" the region from this grey level on (masks may be anti-aliased or JPEG-noisy).
REGION_THRESHOLD = 128


@dataclass(frozen=True)
class CheckedEdit:
    """The edit's own arguments after their checks: source (RGB), region (L, source size, 0/255)."""

    image: Image.Image
    region: Image.Image
    strength: float
    padding_mask_crop: int | None
    feather: int


def binary_region(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The region as 0/255 greyscale at `size` (any mode in; JPEG noise and anti-aliasing thresholded)."""
    grey = mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    return grey.point(lambda value: 255 if value >= REGION_THRESHOLD else 0)


def check_edit(image, mask_image, strength, padding_mask_crop, feather) -> CheckedEdit:
    """Every check of the edit's own arguments, once (messages say what to change)."""
    image = check_source(image)
    mask = validation.check_image(mask_image, "The region (mask_image)")
    if validation._aspect_differs(mask, image.width, image.height, validation.MASK_ASPECT_TOLERANCE):
        raise Parts2WholeInputError(
            f"The region is {mask.width}x{mask.height} but the source is {image.width}x{image.height}, "
            "a different shape: draw the region on this picture.")
    region = binary_region(mask, image.size)
    check_region_coverage(region)
    strength = check_strength(strength)
    if padding_mask_crop is not None and (isinstance(padding_mask_crop, bool) or not isinstance(padding_mask_crop, int)
                                          or padding_mask_crop < 0):
        raise Parts2WholeInputError(f"padding_mask_crop must be a whole number of pixels >= 0, got {padding_mask_crop!r}.")
    if isinstance(feather, bool) or not isinstance(feather, int) or not 0 <= feather <= MAX_FEATHER:
        raise Parts2WholeInputError(f"feather must be a whole number of pixels from 0 to {MAX_FEATHER}, got {feather!r}.")
    return CheckedEdit(image.convert("RGB"), region, float(strength), padding_mask_crop, feather)


def check_strength(strength, name: str = "strength") -> float:
    """How much of the region is redrawn: 0 keeps the source, 1 starts from pure noise."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise Parts2WholeInputError(f"{name} must be a number from 0 to 1, got {strength!r}.")
    return float(strength)


def check_source(image, what: str = "The source image") -> Image.Image:
    """A picture to edit: pixels within the image limit, at least MIN_SIDE a side."""
    image = validation.check_image(image, what)
    if min(image.size) < MIN_SIDE:
        raise Parts2WholeInputError(
            f"{what} is {image.width}x{image.height}: too small to edit (at least {MIN_SIDE} pixels a side).")
    return image


def check_region_coverage(region: Image.Image) -> None:
    """A region must select something, and leave something of the picture to keep."""
    fraction = float(np.asarray(region, dtype=bool).mean())
    if fraction == 0:
        raise Parts2WholeInputError("The region to change is empty: select the part to change (white = change).")
    if fraction > EDIT_MAX_REGION_FRACTION:
        raise Parts2WholeInputError(
            f"The region to change covers {fraction:.0%} of the picture, so nothing would be kept: "
            "draw a smaller region, or generate a new portrait instead.")


def feathered_alpha(region: Image.Image, feather: int) -> Image.Image:
    """Blend weights (L): 255 on the region, a ramp over `feather` pixels outside it, exactly 0 beyond.

    The region is dilated by half the band (a square max filter), then box-blurred by the other half: the
    blur of a pixel of the region only sees dilated pixels (so it stays 255), and nothing spreads past the
    full band (so the rest stays 0)."""
    if feather < 2:
        return region.filter(ImageFilter.MaxFilter(2 * feather + 1)) if feather else region
    half = feather // 2
    dilated = region.filter(ImageFilter.MaxFilter(2 * (feather - half) + 1))
    return dilated.filter(ImageFilter.BoxBlur(half))
