"""Refining the edit region in the app, in process on the tiny models: a click on the region preview adds
(or removes) the segment under it, a brush stroke paints area in or out, Undo steps back, a new photo drops
a region refined on the old one, and Edit changes pixels exactly where the refined region says."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image, ImageDraw

from app_fixtures import example_file
from parts2whole.model.edit_region import DEFAULT_FEATHER, feathered_alpha

#: The photo is wider than the preview (768 px), so clicks on the preview are scaled back to it.
PHOTO_SIZE = (960, 640)
#: The region the person uploads first: a small box in the top-left corner.
BOX = (40, 40, 200, 200)
#: A click (in the photo's pixels) and a brush stroke (in the preview's), both away from BOX.
CLICK = (700, 420)
STROKE = (420, 60, 560, 160)


@pytest.fixture(scope="module")
def handlers(tiny_studio):
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui.edit_region import RegionHandlers

    return RegionHandlers(PreprocessingService(tiny_studio))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The photo (WebP under a .jpg name) and the uploaded region (a 3-channel mask)."""
    folder = tmp_path_factory.mktemp("edit-region")
    pixels = np.random.default_rng(7).integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8)
    photo = Image.fromarray(pixels)
    photo.save(folder / "photo.jpg", format="WEBP", lossless=True)
    region = Image.new("RGB", PHOTO_SIZE)
    ImageDraw.Draw(region).rectangle(BOX, fill=(255, 255, 255))
    region.save(folder / "region.png")
    return folder, folder / "photo.jpg", folder / "region.png"


def _on(mask) -> np.ndarray:
    return np.asarray(mask.convert("L")) > 127


def _saved(mask: Image.Image, path) -> str:
    """What Gradio does with a region the tools return: a PNG file the next event gets as a path."""
    mask.save(path)
    return str(path)


def _stroke(display_size: tuple[int, int]) -> dict:
    """The brush editor's value after one stroke: a transparent layer with the stroke painted in."""
    layer = Image.new("RGBA", display_size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle(STROKE, fill=(255, 45, 149, 140))
    return {"background": None, "layers": [layer], "composite": None}


def test_clicks_and_brush_refine_the_region_that_edit_uses(handlers, files, tiny_studio):
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui.edit import make_edit
    from parts2whole.ui.masks import BRUSH_ADDS
    from parts2whole.ui.uploads import Uploads

    folder, photo, uploaded = files
    uploads, change = Uploads(), ["shoes"]
    _value, preview, editor, message, tools = handlers.given(str(photo), change, str(uploaded), uploads)
    scale = PHOTO_SIZE[0] / preview.width
    assert preview.width == 768 and "your region" in message["value"] and editor["background"].size == preview.size
    box = _on(Image.open(uploaded))

    # A click on the preview (preview pixels) adds the segment under it: scaled back to the photo.
    event = gr.SelectData(None, {"index": [CLICK[0] / scale, CLICK[1] / scale], "value": None})
    clicked, preview, _editor, message, tools = handlers.on_select(str(photo), change, str(uploaded), "add", tools,
                                                                   uploads, event)
    same, *_ = handlers.click(uploads.image("edit source", str(photo), what="photo"), change, str(uploaded), "add",
                              None, *CLICK, uploads)
    assert np.array_equal(_on(clicked), _on(same))  # the preview click landed where the photo click does
    added = _on(clicked) & ~box
    assert (_on(clicked) >= box).all() and added.sum() > 1000, added.sum()
    assert "added by a click" in message["value"] and tools["made"] and len(tools["history"]) == 1
    clicked_path = _saved(clicked, folder / "clicked.png")

    # A stroke on the brush canvas (preview-sized) paints area in, at the photo's size.
    painted, *_, tools = handlers.on_painted(_stroke(preview.size), str(photo), change, clicked_path, BRUSH_ADDS,
                                             tools, uploads)
    stroke = np.zeros((PHOTO_SIZE[1], PHOTO_SIZE[0]), dtype=bool)
    x0, y0, x1, y1 = (round(value * scale) for value in STROKE)
    stroke[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = True
    assert _on(painted)[stroke].all() and (_on(painted) >= _on(clicked)).all()
    assert _on(painted).sum() > _on(clicked).sum() + 0.5 * stroke.sum()
    region_path = _saved(painted, folder / "painted.png")

    # Undo steps back to the region before the stroke, then before the click (the uploaded one).
    undone, *_, message, undo_tools = handlers.on_undo(str(photo), change, region_path, tools, uploads)
    assert np.array_equal(_on(undone), _on(clicked))
    undone, *_, undo_tools = handlers.on_undo(str(photo), change, clicked_path, undo_tools, uploads)
    assert np.array_equal(_on(undone), box) and not undo_tools["history"]

    # Edit with the refined region: pixels change in the click's segment and under the stroke, and
    # nowhere outside the refined region's feather band.
    quiet = lambda *args, **kwargs: None  # noqa: E731 - a progress callback that shows nothing
    gallery, _bundle, status = make_edit(tiny_studio, PreprocessingService(tiny_studio))(
        shoes=str(example_file("face")), change=change, source=str(photo), region=region_path, steps=1,
        size="192 × 128 · thumbnail", seed=3, randomize_seed=False, uploads=uploads, progress=quiet)
    assert "Edited" in status
    edited = np.asarray(gallery[0][0].convert("RGB"), dtype=np.float32)
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    moved = np.abs(edited - original).max(axis=2) > 1.0
    band = np.asarray(feathered_alpha(painted, DEFAULT_FEATHER)) > 0
    assert not (moved & ~band).any()
    assert moved[added].mean() > 0.5 and moved[stroke].mean() > 0.5, (moved[added].mean(), moved[stroke].mean())


def test_remove_clicks_boxes_and_a_new_photo(handlers, files, tmp_path):
    from parts2whole.ui.masks import BRUSH_REMOVES
    from parts2whole.ui.uploads import Uploads

    folder, photo, uploaded = files
    uploads, change = Uploads(), ["shoes"]
    image = uploads.image("edit source", str(photo), what="photo")
    # From the automatic region (nothing uploaded): Undo goes back to it, the region input cleared.
    clicked, *_, message, tools = handlers.click(image, change, None, "add", None, *CLICK, uploads)
    assert isinstance(clicked, Image.Image) and tools["history"] == [None]
    value, _preview, _editor, message, tools = handlers.on_undo(str(photo), change, _saved(clicked, tmp_path / "c.png"),
                                                                tools, uploads)
    assert value is None and "found on the photo" in message["value"] and not tools["made"]

    full = Image.new("L", PHOTO_SIZE, 255)
    full_path = _saved(full, tmp_path / "full.png")
    removed, _preview, _editor, message, tools = handlers.click(image, change, full_path, "remove", None, *CLICK,
                                                                uploads)
    assert 1000 < (~_on(removed)).sum() < 0.9 * full.width * full.height and "removed" in message["value"]
    assert tools["shown"].clicks[0].positive is False  # drawn as a remove click

    value, _preview, _editor, message, tools = handlers.click(image, change, full_path, "box", tools, 100, 80, uploads)
    assert "opposite corner" in message["value"] and tools["corner"] == (100.0, 80.0)
    assert value is not None and not isinstance(value, Image.Image)  # the region stays as it is (gr.skip())
    empty_path = _saved(Image.new("L", PHOTO_SIZE, 0), tmp_path / "empty.png")
    boxed, *_, tools = handlers.click(image, change, empty_path, "box", tools, 500, 400, uploads)
    assert _on(boxed).sum() > 1000 and tools["corner"] is None

    painted, *_ = handlers.on_painted(_stroke((768, 512)), str(photo), change, full_path, BRUSH_REMOVES, tools,
                                      uploads)
    assert (~_on(painted)).sum() > 0.5 * (STROKE[2] - STROKE[0]) * (STROKE[3] - STROKE[1]) * (960 / 768) ** 2

    # Another photo: a region the tools made on the old one is cleared (it does not fit this one).
    other = tmp_path / "other.png"
    Image.fromarray(np.random.default_rng(8).integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(other)
    value, preview, *_, fresh = handlers.refresh(str(other), change, _saved(boxed, tmp_path / "b.png"), tools, uploads)
    assert value is None and preview.size == (200, 300) and not fresh["made"] and not fresh["history"]
    # ... while a region uploaded by hand stays.
    kept, *_ = handlers.refresh(str(photo), change, str(uploaded), fresh, uploads)
    assert not isinstance(kept, Image.Image) and kept is not None
