"""A generation request: what the front doors (app, CLI, batch) fill in, validated ONCE into the exact
values the model runs with, then trusted by everything after it.

Where each check lives (each runs once per request): the studio's own steps are here (empty slots dropped,
numbers from forms parsed, EXIF rotation, masks fitted to their image, parts put in the model's order);
every check itself is a function of `parts2whole.model.validation`, called here with the studio's bounds
(`parts2whole.core.limits`). The result carries a `validation.CheckedRequest`, which the pipeline's
`encode_checked` / `generate_checked` take without checking anything again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from ..core.errors import Parts2WholeInputError
from ..core.labels import PART_LABELS
from ..core.limits import STUDIO_MAX_IMAGES, STUDIO_MAX_SEED, STUDIO_MAX_STEPS
from ..model import validation
from ..model.schedulers import DEFAULT_SCHEDULER, canonical_scheduler_name
from .masks import fit_mask, rgb_or_rgba, upright

DEFAULT_HEIGHT = 768
DEFAULT_WIDTH = 512
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 3.5
DEFAULT_FUSION_BLOCKS = "full"
FUSION_BLOCK_CHOICES = validation.FUSION_BLOCKS
#: The studio's bounds (parts2whole.core.limits: the one table, with the library's and why they differ).
MAX_STEPS, MAX_IMAGES, MAX_SEED = STUDIO_MAX_STEPS, STUDIO_MAX_IMAGES, STUDIO_MAX_SEED


def _number(value, name: str) -> float:
    """A finite number (int, float or numpy scalar; numeric text from forms is accepted too)."""
    if isinstance(value, bool):
        raise Parts2WholeInputError(f"{name} must be a number, got {value!r}.")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Parts2WholeInputError(f"{name} must be a number, got {value!r}.") from None
    if not isinstance(value, (int, float, np.integer, np.floating)):
        raise Parts2WholeInputError(f"{name} must be a number, got {type(value).__name__}.")
    number = float(value)
    if not math.isfinite(number):
        raise Parts2WholeInputError(f"{name} must be a finite number, got {value!r}.")
    return number


def _whole_number(value, name: str) -> int:
    """A whole number: 30 or 30.0 pass (sliders send floats), 2.5 and "many" are refused."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    number = _number(value, name)
    if not number.is_integer():
        raise Parts2WholeInputError(f"{name} must be a whole number, got {value!r}.")
    return int(number)


def _given(items):
    """The entries of a mapping that hold something (an empty slot is None), turned upright; anything
    that is not a mapping is passed on for `validation.normalise_references` to refuse."""
    if not isinstance(items, Mapping):
        return items
    return {label: upright(item) for label, item in items.items() if item is not None}


def checked_references(references, masks) -> validation.CheckedReferences:
    """The parts given (empty slots dropped, EXIF rotation applied), checked once by
    `validation.normalise_references` (labels, count, pixels, mask shapes, empty masks) with each mask
    fitted to its image, then as the model reads them: RGB/RGBA, in the order of PART_LABELS."""
    checked = validation.normalise_references(_given(references), _given(masks or {}), fit_mask=fit_mask)
    images = {label: rgb_or_rgba(checked.images[label]) for label in PART_LABELS if label in checked.images}
    return validation.CheckedReferences(images, {label: checked.masks[label] for label in images if label in checked.masks})


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs; `seed=None` means "pick one" (the result records which).

    `validated()` returns a validated copy; a validated request is trusted as it is (`dataclasses.replace`
    gives an unvalidated copy again, which the studio checks anew)."""

    references: Mapping[str, Image.Image]
    structure: Image.Image | None
    masks: Mapping[str, Image.Image | None] = dataclasses.field(default_factory=dict)
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    num_images: int = 1
    fusion_blocks: str = DEFAULT_FUSION_BLOCKS
    scheduler: str = DEFAULT_SCHEDULER  # a name of parts2whole.model.schedulers.SCHEDULER_NAMES
    #: What the model runs, set by `validated()` only; None: not validated yet.
    _checked: validation.CheckedRequest | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def is_validated(self) -> bool:
        return self._checked is not None

    @property
    def model_request(self) -> validation.CheckedRequest:
        """The checked arguments for `Parts2WholePipeline.generate_checked` (latents out: the studio decodes)."""
        if self._checked is None:
            raise ValueError("call validated() first")
        return self._checked

    def validated(self) -> GenerationRequest:
        """A copy with canonical labels, checked sizes and numbers; raises Parts2WholeInputError if unfixable.

        Every input is checked once, here; on a request validated already this returns it unchanged."""
        if self._checked is not None:
            return self
        references = checked_references(self.references, self.masks)
        structure = upright(validation.check_structure(self.structure)).convert("RGB")
        height, width = validation.check_size(_whole_number(self.height, "Height"), _whole_number(self.width, "Width"),
                                              names=("Height", "Width"))
        settings = validation.GenerationSettings(
            prompt=validation.check_text(self.prompt, "Prompt"),
            negative_prompt=validation.check_text(self.negative_prompt, "Negative prompt"),
            num_inference_steps=validation.check_steps(_whole_number(self.steps, "Steps"), "Steps", MAX_STEPS),
            guidance_scale=validation.check_guidance(_number(self.guidance_scale, "Guidance"), "Guidance"),
            num_images_per_prompt=validation.check_num_images(
                _whole_number(self.num_images, "Number of images"), "Number of images", MAX_IMAGES),
            output_type="latent")
        checked = validation.CheckedRequest(
            references=references, structure=structure, settings=settings, height=height, width=width,
            fusion_blocks=validation.check_fusion_blocks(self.fusion_blocks, "Fusion blocks"),
            scheduler=canonical_scheduler_name(self.scheduler))
        seed = None if self.seed is None else validation.check_seed(_whole_number(self.seed, "Seed"), "Seed", MAX_SEED)
        return self._with_checked(checked, seed)

    def _with_checked(self, checked: validation.CheckedRequest, seed: int | None) -> GenerationRequest:
        """This request holding exactly what `checked` holds, marked validated."""
        settings = checked.settings
        request = dataclasses.replace(
            self, references=dict(checked.references.images), masks=dict(checked.references.masks),
            structure=checked.structure, seed=seed, steps=settings.num_inference_steps,
            num_images=settings.num_images_per_prompt, guidance_scale=settings.guidance_scale, height=checked.height,
            width=checked.width, prompt=settings.prompt, negative_prompt=settings.negative_prompt,
            fusion_blocks=checked.fusion_blocks, scheduler=checked.scheduler)
        object.__setattr__(request, "_checked", checked)  # frozen: set once, here
        return request

    def with_seed(self, seed: int) -> GenerationRequest:
        """The validated request with `seed` (a new input: checked here against the studio's range)."""
        validated = self.validated()
        return validated._with_checked(validated.model_request, validation.check_seed(seed, "Seed", MAX_SEED))

    def notes(self, pipe=None) -> list[str]:
        """What was adjusted on the way (a pose map stretched, a prompt cut to the text encoder's context)."""
        notes = [validation.structure_note(self.structure, self.height, self.width)]
        truncation_note = getattr(pipe, "prompt_truncation_note", None)
        if truncation_note is not None:
            notes.append(truncation_note(self.prompt))
        return [note for note in notes if note]

    def parameters(self) -> dict[str, Any]:
        """The settings that, with the same inputs and weights, reproduce the result (JSON-ready)."""
        return {
            "parts": list(self.references),
            "masked_parts": [label for label in self.references if self.masks.get(label) is not None],
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "num_images": self.num_images,
            "fusion_blocks": self.fusion_blocks,
            "scheduler": self.scheduler,
        }


@dataclasses.dataclass
class GenerationResult:
    images: list[Image.Image]
    request: GenerationRequest  # validated, with the seed actually used
    parameters: dict[str, Any]  # request parameters plus model, device and timing
    reused_references: bool
    seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)  # what was adjusted (pose stretched, prompt cut)
