"""One validation layer for the API, the CLI and the UI: bad input becomes a `Parts2WholeInputError`
whose message tells a designer what to change."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from ..core.errors import Parts2WholeInputError
from ..core.labels import MAX_REFERENCES, UI_SLOT_NAMES, canonical_label
from ..core.limits import (MASK_ASPECT_TOLERANCE, MAX_GUIDANCE, MAX_IMAGE_PIXELS, MAX_IMAGES_PER_PROMPT, MAX_SEED,
                           MAX_SIDE, MAX_STEPS, MIN_SIDE, SIZE_MULTIPLE, STRUCTURE_ASPECT_TOLERANCE)

OUTPUT_TYPES = ("pil", "np", "latent")
#: The library's bounds (parts2whole.core.limits holds them all, with the studio's and why they differ).
MIN_SIZE, MAX_SIZE = MIN_SIDE, MAX_SIDE


def _slot(label: str) -> str:
    return UI_SLOT_NAMES.get(label, label)


def _check_image(value, what: str) -> Image.Image:
    if not isinstance(value, Image.Image):
        raise Parts2WholeInputError(f"{what} must be a PIL image, got {type(value).__name__}.")
    if value.width < 1 or value.height < 1:
        raise Parts2WholeInputError(f"{what} is empty (0 pixels).")
    if value.width * value.height > MAX_IMAGE_PIXELS:
        raise Parts2WholeInputError(
            f"{what} is {value.width}x{value.height}, above the limit of {MAX_IMAGE_PIXELS // 1_000_000} megapixels; scale it down.")
    return value


def _aspect_differs(a: Image.Image, b_width: int, b_height: int, tolerance: float) -> bool:
    return abs((a.width / a.height) / (b_width / b_height) - 1.0) > tolerance


def normalise_references(references, masks) -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    """Official labels in call order, each with its image, and the masks given for some of them."""
    if not isinstance(references, Mapping) or not references:
        raise Parts2WholeInputError("Add at least one reference part (a face, clothes or shoes image).")
    if len(references) > MAX_REFERENCES:
        raise Parts2WholeInputError(f"At most {MAX_REFERENCES} reference parts can be used at once, got {len(references)}.")
    images: dict[str, Image.Image] = {}
    for label, image in references.items():
        official = canonical_label(label)
        if official in images:
            raise Parts2WholeInputError(f"Two references map to the part {official!r}; give each part once.")
        images[official] = _check_image(image, f"The '{_slot(official)}' image")
    given_masks: dict[str, Image.Image] = {}
    if masks is not None:
        if not isinstance(masks, Mapping):
            raise Parts2WholeInputError("masks must map part labels to mask images.")
        for label, mask in masks.items():
            official = canonical_label(label)
            if official not in images:
                raise Parts2WholeInputError(f"There is a mask for '{_slot(official)}' but no image for it; add the image or drop the mask.")
            if mask is not None:
                given_masks[official] = _check_image(mask, f"The mask for '{_slot(official)}'")
                image = images[official]
                if _aspect_differs(mask, image.width, image.height, MASK_ASPECT_TOLERANCE):
                    raise Parts2WholeInputError(
                        f"The mask for '{_slot(official)}' is {mask.width}x{mask.height} but its image is "
                        f"{image.width}x{image.height}: upload the mask made for this image.")
    return images, given_masks


def check_empty_mask(label: str, mask_max: float, from_alpha: bool) -> None:
    if mask_max <= 0:
        source = "its transparency hides the whole image" if from_alpha else "the mask is all black"
        raise Parts2WholeInputError(f"The mask for '{_slot(label)}' selects nothing ({source}) — click on the part or upload a mask.")


def check_size(height, width) -> tuple[int, int]:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Parts2WholeInputError(f"{name} must be a whole number of pixels, got {value!r}.")
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise Parts2WholeInputError(f"{name} must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {value}.")
        if value % SIZE_MULTIPLE:
            raise Parts2WholeInputError(
                f"{name} must be a multiple of {SIZE_MULTIPLE}, got {value} (try {round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE}).")
    return height, width


@dataclass(frozen=True)
class GenerationSettings:
    prompt: str
    negative_prompt: str
    num_inference_steps: int
    guidance_scale: float
    num_images_per_prompt: int
    output_type: str


FUSION_BLOCKS = ("full", "midup")


def check_fusion_blocks(fusion_blocks) -> str:
    if fusion_blocks not in FUSION_BLOCKS:
        raise Parts2WholeInputError(f"fusion_blocks must be 'full' or 'midup', got {fusion_blocks!r}.")
    return fusion_blocks


def check_structure(structure) -> Image.Image:
    if structure is None:
        raise Parts2WholeInputError("Add a pose (structure) map: a DensePose image for the released checkpoint.")
    return _check_image(structure, "The pose map")


def check_request(*, references, masks, structure, prompt, negative_prompt, height, width, num_inference_steps,
                  guidance_scale, num_images_per_prompt, output_type, fusion_blocks,
                  has_reference_encoding: bool) -> GenerationSettings:
    """Every check of one generation request, before any model runs (the single entry point the API,
    the CLI and the UI share). References are checked unless a cached encoding replaces them."""
    settings = check_settings(prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt, output_type)
    check_size(height, width)
    check_fusion_blocks(fusion_blocks)
    check_structure(structure)
    if not has_reference_encoding:
        normalise_references(references, masks)
    return settings


def check_settings(prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt,
                   output_type) -> GenerationSettings:
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, str):
        raise Parts2WholeInputError(f"prompt must be text, got {type(prompt).__name__}.")
    if negative_prompt is None:
        negative_prompt = ""
    if not isinstance(negative_prompt, str):
        raise Parts2WholeInputError(f"negative_prompt must be text, got {type(negative_prompt).__name__}.")
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= MAX_STEPS:
        raise Parts2WholeInputError(f"num_inference_steps must be a whole number from 1 to {MAX_STEPS}, got {num_inference_steps!r}.")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) \
            or not 0 <= guidance_scale <= MAX_GUIDANCE:
        raise Parts2WholeInputError(f"guidance_scale must be a number from 0 to {MAX_GUIDANCE}, got {guidance_scale!r}.")
    if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
            or not 1 <= num_images_per_prompt <= MAX_IMAGES_PER_PROMPT:
        raise Parts2WholeInputError(f"num_images_per_prompt must be from 1 to {MAX_IMAGES_PER_PROMPT}, got {num_images_per_prompt!r}.")
    if output_type not in OUTPUT_TYPES:
        raise Parts2WholeInputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    return GenerationSettings(prompt, negative_prompt, num_inference_steps, float(guidance_scale), num_images_per_prompt, output_type)


def structure_note(structure: Image.Image, height: int, width: int) -> str | None:
    """A note when the structure map is stretched to the output's aspect ratio (it is resized, not cropped)."""
    if _aspect_differs(structure, width, height, STRUCTURE_ASPECT_TOLERANCE):
        return (f"The pose map is {structure.width}x{structure.height} but the output is {width}x{height}: "
                "it was stretched to fit. Use a pose map with the output's proportions for best results.")
    return None


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise Parts2WholeInputError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}.")
    return seed
