"""Structure-map kind heuristic on synthetic DensePose-style, OpenPose and non-map images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from preprocess.pose import NUM_KEYPOINTS, PoseResult, render_pose_map
from preprocess.structure import structure_features, structure_kind_of

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "examples"


def densepose_like(width=256, height=384):
    """Coloured body-part blobs on black, like a DensePose part rendering."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    sx, sy = width / 256, height / 384
    box = lambda x0, y0, x1, y1: (x0 * sx, y0 * sy, x1 * sx, y1 * sy)  # noqa: E731
    draw.ellipse(box(105, 20, 150, 75), fill=(250, 210, 70))  # head
    draw.rectangle(box(90, 80, 165, 195), fill=(60, 120, 220))  # torso
    draw.rectangle(box(60, 85, 88, 190), fill=(90, 200, 110))  # arms
    draw.rectangle(box(167, 85, 195, 190), fill=(90, 200, 110))
    draw.rectangle(box(92, 198, 125, 280), fill=(230, 90, 120))  # thighs
    draw.rectangle(box(130, 198, 163, 280), fill=(230, 90, 120))
    draw.rectangle(box(92, 283, 125, 345), fill=(240, 140, 60))  # shins
    draw.rectangle(box(130, 283, 163, 345), fill=(240, 140, 60))
    return image


def openpose_like(height=512, width=384):
    person = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    body = {0: (192, 80), 1: (200, 72), 2: (184, 72), 3: (210, 78), 4: (174, 78), 5: (240, 130), 6: (144, 130),
            7: (260, 200), 8: (124, 200), 9: (270, 260), 10: (114, 260), 11: (225, 270), 12: (159, 270),
            13: (228, 370), 14: (156, 370), 15: (230, 460), 16: (154, 460)}
    for index, (x, y) in body.items():
        person[index] = (x, y, 1.0)
    return render_pose_map(PoseResult(384, 512, person[None]), (height, width))


@pytest.mark.parametrize("size", [(256, 384), (768, 1152)])
def test_densepose_blobs_at_any_resolution(size):
    assert structure_kind_of(densepose_like(*size)) == "densepose"


@pytest.mark.parametrize("size", [(512, 384), (1024, 768), (256, 192)])
def test_openpose_skeleton_at_any_resolution(size):
    assert structure_kind_of(openpose_like(*size)) == "openpose"


def test_features_separate_the_two_kinds_with_margin():
    dense, skeleton = structure_features(densepose_like()), structure_features(openpose_like())
    assert dense.relative_thickness > 2 * skeleton.relative_thickness
    assert dense.foreground_fraction > skeleton.foreground_fraction
    assert skeleton.dark_fraction > 0.9


def test_photo_like_images_are_unknown():
    gradient = np.linspace(0, 255, 256 * 256 * 3).reshape(256, 256, 3).astype(np.uint8)
    assert structure_kind_of(gradient) == "unknown"
    assert structure_kind_of(Image.new("RGB", (200, 300), (200, 180, 160))) == "unknown"


def test_blank_and_grey_maps_are_unknown():
    assert structure_kind_of(Image.new("RGB", (200, 300))) == "unknown"
    silhouette = Image.new("RGB", (200, 300))
    ImageDraw.Draw(silhouette).rectangle((60, 40, 140, 260), fill=(255, 255, 255))
    assert structure_kind_of(silhouette) == "unknown"


def test_transparent_background_counts_as_black():
    rgba = densepose_like().convert("RGBA")
    alpha = np.where(np.asarray(densepose_like()).max(axis=2) > 0, 255, 0).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    assert structure_kind_of(rgba) == "densepose"


@pytest.mark.skipif(not ASSETS.is_dir(), reason="example assets not in this checkout")
def test_the_bundled_example_pose_maps_read_as_densepose():
    maps = sorted(ASSETS.glob("*/pose.png"))
    assert maps
    for path in maps:
        assert structure_kind_of(path) == "densepose", path


@pytest.mark.parametrize("make, expected", [(densepose_like, "densepose"), (openpose_like, "openpose")])
def test_jpeg_compressed_maps_keep_their_kind(make, expected):
    import io

    buffer = io.BytesIO()
    make().save(buffer, format="JPEG", quality=70)
    assert structure_kind_of(buffer.getvalue()) == expected
