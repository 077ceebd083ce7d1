"""Showing and painting a part's mask: the preview (ignored pixels faded), the brush canvas, merging strokes."""

from __future__ import annotations

import gradio as gr
from PIL import Image, ImageChops

from parts2whole import studio as studio_module

BRUSH_ADDS = "Brush adds to the used area"
BRUSH_REMOVES = "Brush removes from it"
MASK_THRESHOLD = 127
#: Longest side of mask previews and of the brush canvas, in pixels.
PREVIEW_MAX_SIDE = 768


def binary(mask: Image.Image) -> Image.Image:
    """White where the mask is used (above MASK_THRESHOLD), black elsewhere."""
    return mask.point(lambda value: 255 if value > MASK_THRESHOLD else 0)


def display_size(image: Image.Image) -> Image.Image:
    """A copy no larger than PREVIEW_MAX_SIDE: previews and the brush canvas stay fast for big photos
    (strokes are scaled back to the full picture when they are merged into the mask)."""
    if max(image.size) <= PREVIEW_MAX_SIDE:
        return image
    shown = image.copy()
    resample = Image.Resampling.NEAREST if image.mode == "L" else Image.Resampling.LANCZOS
    shown.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), resample)
    return shown


def editor_value(overlay: Image.Image) -> dict:
    """The editor shows the current mask as the background (ignored pixels faded); strokes go on top."""
    return {"background": overlay, "layers": [], "composite": None}


def strokes(value: dict | None, size: tuple[int, int]) -> Image.Image | None:
    """Everything painted in the editor's layers as one L mask at `size`, or None when nothing is painted."""
    if not value:
        return None
    painted = None
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        layer = layer if isinstance(layer, Image.Image) else Image.open(layer)
        alpha = layer.convert("RGBA").getchannel("A").resize(size, Image.Resampling.NEAREST)
        painted = alpha if painted is None else ImageChops.lighter(painted, alpha)
    if painted is None or painted.getextrema()[1] == 0:
        return None
    return painted.point(lambda value: 255 if value > 0 else 0)


def painted_mask(current: Image.Image, painted: Image.Image, mode: str) -> Image.Image:
    """`current` with the strokes added (or removed, for BRUSH_REMOVES)."""
    current = binary(current)
    return ImageChops.subtract(current, painted) if mode == BRUSH_REMOVES else ImageChops.lighter(current, painted)


def preview_label(mask: Image.Image, source: str) -> str:
    return f"Used area {studio_module.mask_coverage(mask):.0%} · {source}"


def default_source(image: Image.Image) -> str:
    """Where a picture's mask comes from when none is given."""
    return "transparency" if image.mode == "RGBA" else "whole picture"


def has_transparency(image: Image.Image) -> bool:
    return image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255


def slot_outputs(image: Image.Image | None, explicit_mask: Image.Image | None, source: str):
    """(mask, preview, editor) updates for a slot showing `image` with `explicit_mask` (None = alpha)."""
    if image is None:
        return None, gr.update(value=None, visible=False), None
    mask = explicit_mask if explicit_mask is not None else studio_module.default_mask(image)
    overlay = studio_module.overlay_mask(display_size(image), display_size(mask))
    preview = gr.update(value=overlay, visible=True, label=preview_label(mask, source))
    return explicit_mask, preview, editor_value(overlay)


def overlay_item(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A small picture with its mask drawn (ignored pixels faded), for galleries."""
    return studio_module.overlay_mask(display_size(image), display_size(mask))
