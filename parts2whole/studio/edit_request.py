"""An edit request: a source picture, the parts to change with their new pictures, the region, the
strength and the usual generation settings, every one of them resolved (the kept references and the
pose are filled in from the source by `studio.edit_sources.prepare_edit`), validated ONCE, then trusted
by `Studio.edit`.

It holds only pictures and numbers, so it can be handed to another worker as it is, like a
`GenerationRequest`. The generation part (references, pose map, settings) IS a `GenerationRequest`,
validated with the same checks; the edit's own part is checked by `model.edit_region.check_edit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from PIL import Image

from ..core.errors import Parts2WholeInputError
from ..core.limits import MIN_SIDE, SIZE_MULTIPLE
from ..core.labels import UI_SLOT_NAMES, canonical_label
from ..model.edit_region import DEFAULT_FEATHER, CheckedEdit, check_edit, check_source
from ..model.schedulers import DEFAULT_SCHEDULER
from .masks import upright
from .request import (DEFAULT_FUSION_BLOCKS, DEFAULT_GUIDANCE, DEFAULT_HEIGHT, DEFAULT_STEPS, DEFAULT_WIDTH,
                      GenerationRequest, _number)

#: Context kept around the region and the person in the edited crop (diffusers' `padding_mask_crop`).
EDIT_CROP_PADDING = 32
#: The fields an edit shares, by name, with the generation it runs (GenerationRequest's own fields).
GENERATION_FIELDS = tuple(field.name for field in dataclasses.fields(GenerationRequest) if field.init)


def working_size(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int]:
    """The crop's working size: `height` x `width` at most, smaller when the crop itself is smaller (no
    upscaling of a small region), in multiples of SIZE_MULTIPLE and at least MIN_SIDE a side."""
    scale = min(1.0, (box[2] - box[0]) / width, (box[3] - box[1]) / height)
    def fit(side: int) -> int:
        return max(MIN_SIDE, int(side * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE)
    return fit(height), fit(width)


def changed_labels(change) -> tuple[str, ...]:
    """Official labels of the parts to change: a label, a comma-separated text, or a list of them, in
    any spelling `canonical_label` accepts ("top", "upper_body_clothes", "shoes")."""
    if change is None:
        return ()
    items = [change] if isinstance(change, str) else list(change)
    labels: list[str] = []
    for item in items:
        for name in str(item).split(","):
            if name.strip():
                label = canonical_label(name.strip())
                if label not in labels:
                    labels.append(label)
    return tuple(labels)


def check_new_pictures(changed: tuple[str, ...], pictures: Mapping[str, Any]) -> None:
    """Every part to change needs its new picture (Parts2WholeInputError naming the first without one)."""
    for label in changed:
        if pictures.get(label) is None:
            raise Parts2WholeInputError(
                f"The part to change '{UI_SLOT_NAMES[label]}' has no new picture: add the new "
                f"{UI_SLOT_NAMES[label].lower()} picture.")


@dataclasses.dataclass(frozen=True)
class EditRequest:
    """One edit, resolved: every reference (kept ones cut from the source, new ones given), the pose map
    aligned with the source, the region (white = change) at the source's size.

    `height` x `width` is the working size of the crop at most (the output has the source's size)."""

    source: Image.Image
    changed: tuple[str, ...]
    references: Mapping[str, Image.Image]
    structure: Image.Image | None
    region: Image.Image | None
    masks: Mapping[str, Image.Image | None] = dataclasses.field(default_factory=dict)
    strength: float = 1.0
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    height: int = DEFAULT_HEIGHT
    width: int = DEFAULT_WIDTH
    num_images: int = 1
    fusion_blocks: str = DEFAULT_FUSION_BLOCKS
    scheduler: str = DEFAULT_SCHEDULER
    #: How the request was resolved, for the parameters JSON (what was cut from the source, the rule
    #: applied to the whole-outfit part, where the region and pose came from).
    origin: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    _generation: GenerationRequest | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _edit: CheckedEdit | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def is_validated(self) -> bool:
        return self._generation is not None

    @property
    def generation(self) -> GenerationRequest:
        """The validated generation part (references, pose, settings) of a validated edit."""
        if self._generation is None:
            raise ValueError("call validated() first")
        return self._generation

    @property
    def checked_edit(self) -> CheckedEdit:
        if self._edit is None:
            raise ValueError("call validated() first")
        return self._edit

    @property
    def model_request(self):
        return self.generation.model_request

    def validated(self) -> EditRequest:
        """A copy with every input checked once (Parts2WholeInputError with a one-line reason otherwise)."""
        if self._generation is not None:
            return self
        source = upright(check_source(self.source)).convert("RGB")
        changed = changed_labels(self.changed)
        if not changed:
            raise Parts2WholeInputError("Name at least one part to change and give its new picture.")
        check_new_pictures(changed, self.references)
        if self.region is None:
            raise Parts2WholeInputError("Give the region to change (white = change) or let it be found from the photo.")
        strength = _number(self.strength, "Strength")
        edit = check_edit(source, upright(self.region), strength, EDIT_CROP_PADDING, DEFAULT_FEATHER)
        generation = GenerationRequest(**{name: getattr(self, name) for name in GENERATION_FIELDS}).validated()
        return self._with(generation, edit, changed)

    def _with(self, generation: GenerationRequest, edit: CheckedEdit, changed: tuple[str, ...]) -> EditRequest:
        request = dataclasses.replace(self, source=edit.image, region=edit.region, changed=changed,
                                      strength=edit.strength,
                                      **{name: getattr(generation, name) for name in GENERATION_FIELDS})
        object.__setattr__(request, "_generation", generation)  # frozen: set once, here
        object.__setattr__(request, "_edit", edit)
        return request

    def with_seed(self, seed: int) -> EditRequest:
        validated = self.validated()
        return validated._with(validated.generation.with_seed(seed), validated.checked_edit, validated.changed)

    def notes(self, pipe=None) -> list[str]:
        """What was adjusted (a prompt cut to the text encoder's context). The pose map is cut with the
        crop, so its shape never differs from the working size's."""
        truncation_note = getattr(pipe, "prompt_truncation_note", None)
        note = truncation_note(self.prompt) if truncation_note is not None else None
        return [note] if note else []

    def parameters(self) -> dict[str, Any]:
        """The settings that, with the same source, parts and weights, reproduce the edit (JSON-ready)."""
        return self.generation.parameters() | {
            "mode": "edit",
            "change": list(self.changed),
            "strength": self.strength,
            "source_size": list(self.source.size),
            "max_working_size": [self.height, self.width],
            **({"edit": dict(self.origin)} if self.origin else {}),
        }
