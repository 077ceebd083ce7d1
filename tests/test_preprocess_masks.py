"""Mask post-processing: speckles, holes, boxes and conversions."""

from __future__ import annotations

import numpy as np
from PIL import Image

from preprocess.images import pixel_hash
from preprocess.masks import bounding_box, clean_mask, fill_small_holes, image_to_mask, mask_to_image, remove_small_regions


def _square_with_speckle_and_hole():
    mask = np.zeros((100, 100), dtype=bool)
    mask[20:80, 20:80] = True  # the part
    mask[50, 50] = False  # a one-pixel hole inside it
    mask[5, 5] = True  # a one-pixel speckle outside
    return mask


def test_small_regions_are_removed_and_large_ones_kept():
    cleaned = remove_small_regions(_square_with_speckle_and_hole(), min_area=10)
    assert not cleaned[5, 5]
    assert cleaned[30, 30]


def test_diagonal_pixels_are_one_region():
    strap = np.eye(20, dtype=bool)  # a thin diagonal strap of 20 pixels
    assert remove_small_regions(strap, min_area=15).sum() == 20


def test_enclosed_small_holes_are_filled_but_border_gaps_are_not():
    mask = _square_with_speckle_and_hole()
    filled = fill_small_holes(mask, max_area=4)
    assert filled[50, 50]
    assert not filled[0, 0] and not filled[99, 99]  # the background outside is never "a hole"
    big_hole = np.ones((30, 30), dtype=bool)
    big_hole[10:20, 10:20] = False
    assert not fill_small_holes(big_hole, max_area=50)[15, 15]


def test_clean_mask_scales_with_the_image():
    cleaned = clean_mask(_square_with_speckle_and_hole())
    assert cleaned[50, 50] and not cleaned[5, 5]
    assert cleaned.sum() == 60 * 60


def test_bounding_box_is_exclusive_and_empty_is_none():
    mask = np.zeros((10, 20), dtype=bool)
    assert bounding_box(mask) is None
    mask[2:5, 3:9] = True
    assert bounding_box(mask) == (3, 2, 9, 5)


def test_conversions_round_trip():
    mask = _square_with_speckle_and_hole()
    image = mask_to_image(mask)
    assert image.mode == "L" and set(np.unique(np.asarray(image))) == {0, 255}
    assert np.array_equal(image_to_mask(image), mask)


def test_pixel_hash_depends_on_content_mode_and_size():
    first = Image.new("RGB", (10, 10), (1, 2, 3))
    assert pixel_hash(first) == pixel_hash(first.copy())
    assert pixel_hash(first) != pixel_hash(Image.new("RGB", (10, 10), (1, 2, 4)))
    assert pixel_hash(first) != pixel_hash(Image.new("RGB", (5, 20), (1, 2, 3)))


# --- properties -----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

small_masks = arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)))


@settings(max_examples=60, deadline=None)
@given(small_masks, st.integers(0, 30))
def test_removing_regions_only_removes_and_filling_holes_only_adds(mask, area):
    removed = remove_small_regions(mask, area)
    filled = fill_small_holes(mask, area)
    assert not (removed & ~mask).any()
    assert not (mask & ~filled).any()


@settings(max_examples=60, deadline=None)
@given(small_masks)
def test_bounding_box_contains_exactly_the_mask(mask):
    box = bounding_box(mask)
    if box is None:
        assert not mask.any()
        return
    x0, y0, x1, y1 = box
    assert mask[y0:y1, x0:x1].sum() == mask.sum()
    assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any() and mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
