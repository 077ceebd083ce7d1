"""One validation layer for the API, the CLI and the UI: bad input becomes a `Parts2WholeInputError`
whose message tells a designer what to change.

Each check lives here once, as a small function; a caller composes them and runs each once per input:

* `Parts2WholePipeline.__call__` runs `check_request` (every argument), `encode_references` runs
  `normalise_references` + `check_size` + `check_fusion_blocks`;
* the studio (`parts2whole.studio.request`) runs the same functions with the studio's bounds
  (`parts2whole.core.limits`), after its own steps (empty slots dropped, EXIF rotation, masks fitted).

What passed comes back frozen: `CheckedReferences` and `CheckedRequest`. The pipeline's `encode_checked`
and `generate_checked` take them as they are and check nothing again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PIL import Image

from ..core.errors import Parts2WholeInputError
from ..core.labels import MAX_REFERENCES, UI_SLOT_NAMES, canonical_label
from ..core.limits import (MASK_ASPECT_TOLERANCE, MAX_GUIDANCE, MAX_IMAGE_PIXELS, MAX_IMAGES_PER_PROMPT, MAX_SEED,
                           MAX_SIDE, MAX_STEPS, MIN_SIDE, SIZE_MULTIPLE, STRUCTURE_ASPECT_TOLERANCE)
from .schedulers import canonical_scheduler_name, check_eta

OUTPUT_TYPES = ("pil", "np", "latent")
FUSION_BLOCKS = ("full", "midup")
#: The library's bounds (parts2whole.core.limits holds them all, with the studio's and why they differ).
MIN_SIZE, MAX_SIZE = MIN_SIDE, MAX_SIDE


@dataclass(frozen=True)
class CheckedReferences:
    """References that passed every reference check once: official labels in the order the model reads
    them, each with its image, and the masks given for some of them (as the model reads them)."""

    images: Mapping[str, Image.Image]
    masks: Mapping[str, Image.Image]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.images)


@dataclass(frozen=True)
class GenerationSettings:
    prompt: str
    negative_prompt: str
    num_inference_steps: int
    guidance_scale: float
    num_images_per_prompt: int
    output_type: str


@dataclass(frozen=True)
class CheckedRequest:
    """One generation's arguments after their checks: what `Parts2WholePipeline.generate_checked` runs."""

    references: CheckedReferences | None  # None when a reference encoding replaces them
    structure: Image.Image
    settings: GenerationSettings
    height: int
    width: int
    fusion_blocks: str
    scheduler: str | None = None  # a canonical name of schedulers.SCHEDULER_NAMES; None: the pipeline's own
    eta: float = 0.0


def _slot(label: str) -> str:
    return UI_SLOT_NAMES.get(label, label)


# ------------------------------------------------------------------------------------------ images


def check_image(value, what: str) -> Image.Image:
    """A PIL image with pixels, at most MAX_IMAGE_PIXELS of them (read from the size: nothing is decoded)."""
    if not isinstance(value, Image.Image):
        raise Parts2WholeInputError(
            f"{what} must be a PIL image, got {type(value).__name__}; "
            "open files with preprocess.images.load_image (it also checks them).")
    if value.width < 1 or value.height < 1:
        raise Parts2WholeInputError(f"{what} is empty (0 pixels).")
    if value.width * value.height > MAX_IMAGE_PIXELS:
        raise Parts2WholeInputError(
            f"{what} is {value.width}x{value.height}, above the limit of {MAX_IMAGE_PIXELS // 1_000_000} megapixels; scale it down.")
    return value


def _aspect_differs(a: Image.Image, b_width: int, b_height: int, tolerance: float) -> bool:
    return abs((a.width / a.height) / (b_width / b_height) - 1.0) > tolerance


# ------------------------------------------------------------------------------------------ references


def check_reference_count(count: int) -> None:
    if count < 1:
        raise Parts2WholeInputError("Add at least one reference part (a face, hair or headwear, clothes or shoes image).")
    if count > MAX_REFERENCES:
        raise Parts2WholeInputError(f"At most {MAX_REFERENCES} reference parts can be used at once, got {count}.")


def check_new_label(label, seen: Mapping[str, object]) -> str:
    """The official label of `label` (canonicalised here, once), refused when `seen` has it already."""
    official = canonical_label(label)
    if official in seen:
        raise Parts2WholeInputError(f"Two references map to the part {official!r}; give each part once.")
    return official


def check_mask_label(label, images: Mapping[str, Image.Image]) -> str:
    """The official label of a mask's part, which must have an image."""
    official = canonical_label(label)
    if official not in images:
        raise Parts2WholeInputError(f"There is a mask for '{_slot(official)}' but no image for it; add the image or drop the mask.")
    return official


def check_mask_shape(label: str, mask: Image.Image, image: Image.Image) -> None:
    """A mask may have another resolution than its image, not another shape (it was made for another picture)."""
    if _aspect_differs(mask, image.width, image.height, MASK_ASPECT_TOLERANCE):
        raise Parts2WholeInputError(
            f"The mask for '{_slot(label)}' is {mask.width}x{mask.height} but its image is "
            f"{image.width}x{image.height}, a different shape: upload the mask made for this image.")


def _alpha(image: Image.Image) -> Image.Image | None:
    """The image's transparency (what the model uses as the mask when none is given), None when opaque."""
    if image.mode in ("RGBA", "LA", "PA"):
        return image.getchannel("A")
    if "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def check_mask_selects(label: str, mask: Image.Image | None, image: Image.Image) -> None:
    """The one empty-mask check: the mask as the model reads it (greyscale; without a mask, the image's
    alpha) must keep at least one pixel. Run before any model work, at the mask's own resolution."""
    from_alpha = mask is None
    grey = _alpha(image) if from_alpha else (mask if mask.mode == "L" else mask.convert("L"))
    if grey is not None and grey.getextrema()[1] == 0:
        source = "its transparency hides the whole image" if from_alpha else "the mask is all black"
        raise Parts2WholeInputError(
            f"The mask for '{_slot(label)}' is empty and selects nothing ({source}) — click on the part or upload a mask.")


def normalise_references(references, masks,
                         fit_mask: Callable[[Image.Image, Image.Image], Image.Image] | None = None) -> CheckedReferences:
    """Every reference check, once: official labels in call order, each with its image, and the masks.

    `fit_mask(mask, image)` turns a given mask into the one the model reads, after its shape is checked
    and before its emptiness is (the studio fits masks to their image); by default masks stay as given.
    """
    if not isinstance(references, Mapping):
        raise Parts2WholeInputError(
            f"references must map part labels to images, e.g. {{'face': face_image}}; got {type(references).__name__}.")
    check_reference_count(len(references))
    images: dict[str, Image.Image] = {}
    for label, image in references.items():
        official = check_new_label(label, images)
        images[official] = check_image(image, f"The '{_slot(official)}' image")
    given_masks: dict[str, Image.Image] = {}
    if masks is not None and not isinstance(masks, Mapping):
        raise Parts2WholeInputError(f"masks must map part labels to mask images; got {type(masks).__name__}.")
    for label, mask in (masks or {}).items():
        official = check_mask_label(label, images)
        if mask is None:
            continue
        image = images[official]
        check_mask_shape(official, check_image(mask, f"The mask for '{_slot(official)}'"), image)
        given_masks[official] = fit_mask(mask, image) if fit_mask is not None else mask
    for label, image in images.items():
        check_mask_selects(label, given_masks.get(label), image)
    return CheckedReferences(images, given_masks)


# ------------------------------------------------------------------------------------------ settings


def check_size(height, width, names: tuple[str, str] = ("height", "width")) -> tuple[int, int]:
    for name, value in zip(names, (height, width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Parts2WholeInputError(f"{name} must be a whole number of pixels, got {value!r}.")
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise Parts2WholeInputError(f"{name} must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {value}.")
        if value % SIZE_MULTIPLE:
            raise Parts2WholeInputError(
                f"{name} must be a multiple of {SIZE_MULTIPLE}, got {value} (try {round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE}).")
    return height, width


def check_fusion_blocks(fusion_blocks, name: str = "fusion_blocks") -> str:
    if fusion_blocks not in FUSION_BLOCKS:
        raise Parts2WholeInputError(f"{name} must be 'full' or 'midup', got {fusion_blocks!r}.")
    return fusion_blocks


def check_structure(structure) -> Image.Image:
    if structure is None:
        raise Parts2WholeInputError("Add a pose (structure) map: a DensePose image for the released checkpoint.")
    return check_image(structure, "The pose map")


def check_text(value, name: str) -> str:
    """Text, with None meaning none."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Parts2WholeInputError(f"{name} must be text, got {type(value).__name__}.")
    return value


def _whole_in_range(value, name: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise Parts2WholeInputError(f"{name} must be a whole number from {minimum} to {maximum}, got {value!r}.")
    return value


def check_steps(value, name: str = "num_inference_steps", maximum: int = MAX_STEPS) -> int:
    return _whole_in_range(value, name, 1, maximum)


def check_num_images(value, name: str = "num_images_per_prompt", maximum: int = MAX_IMAGES_PER_PROMPT) -> int:
    return _whole_in_range(value, name, 1, maximum)


def check_seed(seed, name: str = "seed", maximum: int = MAX_SEED) -> int:
    return _whole_in_range(seed, name, 0, maximum)


def check_guidance(value, name: str = "guidance_scale") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_GUIDANCE:
        raise Parts2WholeInputError(f"{name} must be a number from 0 to {MAX_GUIDANCE:g}, got {value!r}.")
    return float(value)


def check_settings(prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt,
                   output_type) -> GenerationSettings:
    if output_type not in OUTPUT_TYPES:
        raise Parts2WholeInputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
    return GenerationSettings(check_text(prompt, "prompt"), check_text(negative_prompt, "negative_prompt"),
                              check_steps(num_inference_steps), check_guidance(guidance_scale),
                              check_num_images(num_images_per_prompt), output_type)


def check_request(*, references, masks, structure, prompt, negative_prompt, height, width, num_inference_steps,
                  guidance_scale, num_images_per_prompt, output_type, fusion_blocks, has_reference_encoding: bool,
                  scheduler=None, eta=0.0) -> CheckedRequest:
    """Every check of one `Parts2WholePipeline.__call__`, once, before any model runs. References are
    checked unless a cached encoding replaces them; `scheduler` becomes its canonical name here."""
    settings = check_settings(prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt, output_type)
    height, width = check_size(height, width)
    return CheckedRequest(
        references=None if has_reference_encoding else normalise_references(references, masks),
        structure=check_structure(structure), settings=settings, height=height, width=width,
        fusion_blocks=check_fusion_blocks(fusion_blocks),
        scheduler=None if scheduler is None else canonical_scheduler_name(scheduler), eta=check_eta(eta))


def structure_note(structure: Image.Image, height: int, width: int) -> str | None:
    """A note when the structure map is stretched to the output's aspect ratio (it is resized, not cropped)."""
    if _aspect_differs(structure, width, height, STRUCTURE_ASPECT_TOLERANCE):
        return (f"The pose map is {structure.width}x{structure.height} but the output is {width}x{height}: "
                "it was stretched to fit. Use a pose map with the output's proportions for best results.")
    return None
