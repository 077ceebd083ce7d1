"""How tests compare results of separate runs: within a tolerance, never bitwise.

Two runs of the same computation can differ in the last bits (thread scheduling, memory alignment, a
busy machine picking another kernel); the golden README measures up to 1.2e-6 on images and 3.3e-6 on
noise predictions between 1 and 2 CPU threads, while the smallest genuine semantic change it tried moves
an image by 1.2e-3. Comparing within the golden tolerance separates the two.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The golden fixtures' tolerance on images in [0, 1] (atol, no relative part).
RUN_TO_RUN_ATOL = 1e-4
#: Saved 8-bit images: float noise can move a pixel across a rounding boundary, by one level at most.
PIXEL_LEVELS = 1
#: Thresholded masks: float noise can flip a pixel that sits on the threshold; allow that few.
MASK_FLIP_FRACTION = 1e-3


def _array(value) -> np.ndarray:
    return np.asarray(value.convert("RGB") if isinstance(value, Image.Image) and value.mode not in ("RGB", "L") else value)


def assert_same_run(first, second, atol: float = RUN_TO_RUN_ATOL) -> None:
    """Float outputs (images in [0, 1], latents) of two runs of the same computation."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    assert first.shape == second.shape, (first.shape, second.shape)
    np.testing.assert_allclose(first, second, rtol=0, atol=atol)


def assert_same_pixels(first, second, levels: int = PIXEL_LEVELS) -> None:
    """8-bit images (PIL or arrays) of two runs of the same computation."""
    first, second = _array(first).astype(np.int16), _array(second).astype(np.int16)
    assert first.shape == second.shape, (first.shape, second.shape)
    assert np.abs(first - second).max() <= levels, f"pixels differ by up to {np.abs(first - second).max()} levels"


def _binary(mask) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 127


def assert_masks_agree(first, second, max_fraction: float = MASK_FLIP_FRACTION) -> None:
    """Masks (bool, or 8-bit 0/255) thresholded from floats in two runs, or two backends, of one model."""
    first, second = _binary(first), _binary(second)
    assert first.shape == second.shape, (first.shape, second.shape)
    flipped = np.count_nonzero(first != second)
    assert flipped <= max(1, max_fraction * first.size), f"{flipped} of {first.size} mask pixels differ"
