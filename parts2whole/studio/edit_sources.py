"""What an edit takes from its source: the kept parts, the pose and the region, resolved into an
`EditRequest` before any model of the generator runs (`prepare_edit`).

* Kept parts (face, hair, the garments not changed) become references cut from the source: each found
  part's box (with a margin) and its automatic mask (the human parser), so the person stays the person.
* The whole-outfit part ("whole body clothes", learned as every garment together) is DROPPED when a top,
  a bottom or the outfit changes: kept, it would draw the old garment back; re-cut without the changed
  garment it would be the kept top or bottom a second time. When the whole outfit changes, the kept top
  and bottom are dropped too (the new outfit replaces them).
* The pose is the source's own map (DensePose for the released checkpoint); no person found is an error.
* The region is the union of the changed parts' masks on the source, dilated (their body areas on the
  DensePose map when the parser finds none of them); a region given overrides.
* A result of ours brings its own references and pose (`result_inputs`: the JSON the CLI writes next to
  it, or a bundle's parameters.json), so an edit of a result reuses them (and their cached encodings).

The analysis is an interface (`SourceAnalysis`) so tests and other front doors can stand in for the
parser and the pose estimator; `ServiceAnalysis` is the app's (the studio's `PreprocessingService`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageFilter

from preprocess.images import load_image, load_mask
from preprocess.parsing import auto_part_masks

from ..core.errors import Parts2WholeInputError
from ..core.labels import FACE, HAIR, LOWER, PART_LABELS, SHOES, UI_SLOT_NAMES, UPPER, WHOLE, canonical_label
from ..model.edit_region import binary_region, check_source, check_strength
from .edit_request import EditRequest, changed_labels, check_new_pictures
from .masks import upright
from .request import _number

#: The automatic region grows by this fraction of the source's shorter side (at least MIN_REGION_GROWTH
#: pixels), so the new part may be a little larger than the old one and its border is redrawn too.
REGION_GROWTH_FRACTION = 0.02
MIN_REGION_GROWTH = 6
#: A kept part is cut from the source with this margin around its box (fraction of the box's size).
PART_MARGIN = 0.1
#: DensePose body parts (the I index, blue channel of the IUV map) under each part label: where the region
#: falls back to when the parser finds none of the changed parts (1-2 torso, 3-4 hands, 5-6 feet, 7-14
#: legs, 15-22 arms, 23-24 head; the DensePose chart convention).
DENSEPOSE_CHANNEL_I = 2
DENSEPOSE_PARTS = {FACE: (23, 24), HAIR: (23, 24), UPPER: (1, 2, *range(15, 23)), LOWER: tuple(range(7, 15)),
                   WHOLE: (1, 2, *range(7, 23)), SHOES: (5, 6)}
#: Body areas on the DensePose map smaller than this fraction of the picture are noise, not a part.
MIN_BODY_FRACTION = 0.001
#: The garments the whole-outfit part stands for (see the module docstring).
OUTFIT_PARTS = (UPPER, LOWER, WHOLE)


class SourceAnalysis(Protocol):
    """What an edit needs to know about its source picture."""

    def part_masks(self, image: Image.Image) -> dict[str, Image.Image]:
        """The parts found on the person: label -> mask (L, image size, 255 = part)."""

    def pose_map(self, image: Image.Image) -> Image.Image:
        """The pose map of the person, aligned with the image (raises Parts2WholeInputError: no person)."""


class ServiceAnalysis:
    """The app's analysis: the human parser and the pose map of the studio's preprocessing service."""

    def __init__(self, service):
        self.service = service

    def part_masks(self, image: Image.Image) -> dict[str, Image.Image]:
        found = auto_part_masks(image, parser=self.service.parser())
        return {label: part.mask for label, part in found.items() if part.found}

    def pose_map(self, image: Image.Image) -> Image.Image:
        return self.service.pose_from_photo(image).pose_map


@dataclasses.dataclass(frozen=True)
class ResultInputs:
    """What one of our results was made from: its references, their masks and its pose map."""

    references: Mapping[str, Image.Image]
    masks: Mapping[str, Image.Image]
    pose: Image.Image | None
    origin: str  # the file that said so


def kept_labels(changed: tuple[str, ...], available) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the parts kept from the source, {dropped part: why}) for the parts `changed` (the rule above)."""
    dropped: dict[str, str] = {}
    if set(changed) & set(OUTFIT_PARTS) and WHOLE not in changed:
        dropped[WHOLE] = "dropped: the whole outfit would bring the changed garment back"
    if WHOLE in changed:
        for label in (UPPER, LOWER):
            dropped[label] = "dropped: the new whole outfit replaces it"
    kept = tuple(label for label in PART_LABELS if label in available and label not in changed and label not in dropped)
    return kept, {label: why for label, why in dropped.items() if label in available}


def cut_part(source: Image.Image, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The part's box of the source (with PART_MARGIN) and its mask in that box."""
    rows, cols = np.nonzero(np.asarray(mask.convert("L")) > 0)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    margin_y, margin_x = round((bottom - top) * PART_MARGIN), round((right - left) * PART_MARGIN)
    box = (max(0, left - margin_x), max(0, top - margin_y), min(source.width, right + margin_x),
           min(source.height, bottom + margin_y))
    return source.crop(box), mask.convert("L").crop(box)


def region_from_parts(masks: Mapping[str, Image.Image], changed: tuple[str, ...], size) -> Image.Image:
    """The union of the changed parts' masks, grown by REGION_GROWTH_FRACTION (refused when none is found)."""
    union = np.zeros((size[1], size[0]), dtype=bool)
    for label in changed:
        if label in masks:
            union |= np.asarray(binary_region(masks[label], size)) > 0
    if not union.any():
        names = " or ".join(UI_SLOT_NAMES[label].lower() for label in changed)
        raise Parts2WholeInputError(
            f"No {names} found in the photo, so the region to change is empty: draw the region (white = change).")
    growth = max(MIN_REGION_GROWTH, round(min(size) * REGION_GROWTH_FRACTION))
    return Image.fromarray(union.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * growth + 1))


def region_from_densepose(pose: Image.Image, changed: tuple[str, ...], size) -> Image.Image | None:
    """The changed parts' body areas on a DensePose map aligned with the source, grown like the parser's
    region; None when the map shows none of them (or is not a DensePose map)."""
    body = np.asarray(pose.convert("RGB").resize(size, Image.Resampling.NEAREST))[..., DENSEPOSE_CHANNEL_I]
    wanted = [index for label in changed for index in DENSEPOSE_PARTS[label]]
    area = np.isin(body, wanted)
    if area.mean() < MIN_BODY_FRACTION:
        return None
    return region_from_parts({"body": Image.fromarray(area.astype(np.uint8) * 255)}, ("body",), size)


def prepare_edit(analysis: SourceAnalysis, source: Image.Image, *, new_parts: Mapping[str, Image.Image | None],
                 new_masks: Mapping[str, Image.Image | None] | None = None, change=None,
                 region: Image.Image | None = None, pose: Image.Image | None = None,
                 result: ResultInputs | None = None, **settings) -> EditRequest:
    """The edit, resolved and validated: what is not given is taken from the source (module docstring).

    `change` names the parts to change (labels or aliases, comma-separated or a list); without it, the
    parts given in `new_parts` are the ones changed. `settings` are `EditRequest`'s (prompt, seed, ...)."""
    source = upright(check_source(source)).convert("RGB")
    check_strength(_number(settings.get("strength", 1.0), "Strength"))  # cheap checks before the parser runs
    new_parts = {canonical_label(label): image for label, image in new_parts.items() if image is not None}
    new_masks = {canonical_label(label): mask for label, mask in (new_masks or {}).items() if mask is not None}
    changed = _changed_parts(changed_labels(change), new_parts)
    origin: dict[str, Any] = {}
    source_masks = analysis.part_masks(source) if region is None or result is None else {}
    if result is not None:
        kept, dropped = kept_labels(changed, result.references)
        references = {label: result.references[label] for label in kept}
        masks = {label: result.masks[label] for label in kept if label in result.masks}
        origin["kept_from"] = result.origin
    else:
        kept, dropped = kept_labels(changed, source_masks)
        references, masks = {}, {}
        for label in kept:
            references[label], masks[label] = cut_part(source, source_masks[label])
        origin["kept_from"] = "cut from the source with the automatic part masks"
    origin |= {"kept": list(kept), "dropped": dropped}
    if pose is None and result is not None and result.pose is not None:
        pose, origin["pose"] = result.pose, result.origin
    elif pose is None:
        pose, origin["pose"] = analysis.pose_map(source), "made from the source"
    else:
        origin["pose"] = "given"
    if region is None:
        region, origin["region"] = _automatic_region(source_masks, pose, changed, source.size)
    else:
        origin["region"] = "given"
    references |= {label: new_parts[label] for label in changed}
    masks |= {label: new_masks[label] for label in changed if label in new_masks}
    ordered = {label: references[label] for label in PART_LABELS if label in references}
    return EditRequest(source=source, changed=changed, references=ordered, masks=masks, structure=pose, region=region,
                       origin=origin, **settings).validated()


def _changed_parts(named: tuple[str, ...], new_parts: Mapping[str, Image.Image]) -> tuple[str, ...]:
    """The parts to change, in label order: those named, or (none named) those given a new picture. Every
    part named needs a new picture, and a new picture of a part not named is refused (which was meant?)."""
    changed = named or tuple(label for label in PART_LABELS if label in new_parts)
    if not changed:
        raise Parts2WholeInputError("Name a part to change and give its new picture (e.g. --change shoes --shoes new.jpg).")
    check_new_pictures(changed, new_parts)
    for label in new_parts:
        if label not in changed:
            raise Parts2WholeInputError(
                f"A new {UI_SLOT_NAMES[label].lower()} picture is given, but {UI_SLOT_NAMES[label].lower()} is not "
                f"among the parts to change: add it to them (--change), or leave the picture out.")
    return tuple(label for label in PART_LABELS if label in changed)


def _automatic_region(source_masks, pose: Image.Image, changed: tuple[str, ...], size) -> tuple[Image.Image, str]:
    """The changed parts' parser masks, else (the parser found none) their body areas on the DensePose map."""
    try:
        return region_from_parts(source_masks, changed, size), "the changed parts' automatic masks, grown"
    except Parts2WholeInputError:
        body = region_from_densepose(pose, changed, size) if pose is not None else None
        if body is None:
            raise
        return body, "the changed parts' body areas on the DensePose map (the parser found none), grown"


def automatic_region(analysis: SourceAnalysis, source: Image.Image, changed: tuple[str, ...]) -> tuple[Image.Image, str]:
    """The region an edit of `source` gets when none is given, and where it came from: what the app shows
    over the photo and what its click and brush tools start from. The pose map is only made when the
    parser finds none of the changed parts (raises Parts2WholeInputError when neither finds them)."""
    masks = analysis.part_masks(source)
    try:
        return _automatic_region(masks, None, changed, source.size)
    except Parts2WholeInputError:
        return _automatic_region(masks, analysis.pose_map(source), changed, source.size)


def result_inputs(photo: str | Path) -> ResultInputs | None:
    """What a result of ours was made from, when it carries it: the JSON `generate` writes next to it
    (OUT.json beside OUT.png or OUT_0.png, its "outputs" naming this file), or, for results/result_N.png
    of an unzipped app bundle, the bundle's parameters.json and inputs. None for any other picture (or
    when its input files are gone)."""
    photo = Path(photo)
    bundled = _bundle_inputs(photo)
    if bundled is not None:
        return bundled
    stem = photo.stem.rsplit("_", 1)[0] if photo.stem.rsplit("_", 1)[-1].isdigit() else photo.stem
    for candidate in (photo.with_suffix(".json"), photo.with_name(f"{stem}.json")):
        try:
            record = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or photo.name not in record.get("outputs", []) or record.get("mode") == "edit":
            continue
        inputs = record.get("inputs") or {}
        try:
            references = {label: load_image(_beside(candidate, inputs[label])) for label in PART_LABELS if inputs.get(label)}
            masks = {label: load_mask(_beside(candidate, inputs[f"mask {label}"]), references[label].size).mask
                     for label in references if inputs.get(f"mask {label}")}
            pose_file = (record.get("pose_map") or {}).get("file") or inputs.get("pose")
            pose = load_image(_beside(candidate, pose_file)).convert("RGB") if pose_file else None
        except (OSError, Parts2WholeInputError):
            return None
        return ResultInputs(references, masks, pose, str(candidate)) if references else None
    return None


def _bundle_inputs(photo: Path) -> ResultInputs | None:
    """A result inside an unzipped bundle of the app: results/result_N.png beside parameters.json, with
    inputs/<part>.png, masks/<part>.png and inputs/pose.png (what `ui.bundle.write_bundle` writes)."""
    record_path = photo.parent.parent / "parameters.json"
    if photo.parent.name != "results" or not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        if not isinstance(record, dict) or record.get("mode") == "edit":
            return None
        folder = record_path.parent
        stems = {label: label.replace(" ", "_") for label in record.get("parts", []) if label in PART_LABELS}
        references = {label: load_image(folder / "inputs" / f"{stem}.png") for label, stem in stems.items()}
        given = record.get("masked_parts", [])  # the others' masks in the bundle are the defaults, not inputs
        masks = {label: load_mask(folder / "masks" / f"{stem}.png", references[label].size).mask
                 for label, stem in stems.items() if label in given}
        pose = load_image(folder / "inputs" / "pose.png").convert("RGB")
    except (OSError, ValueError, Parts2WholeInputError):
        return None
    return ResultInputs(references, masks, pose, str(record_path)) if references else None


def _beside(record: Path, name: str) -> Path:
    """A recorded input path: as written (absolute, or relative to where the command ran), else beside the record."""
    path = Path(name)
    return path if path.is_absolute() or path.exists() else record.parent / path


@dataclasses.dataclass
class EditFiles:
    """An edit described by files (what `python -m parts2whole edit` and an edit line of a batch give):
    the source, the new parts and masks by label, the optional region and pose map."""

    source: str
    parts: dict[str, str] = dataclasses.field(default_factory=dict)
    masks: dict[str, str] = dataclasses.field(default_factory=dict)
    region: str | None = None
    pose: str | None = None

    def load(self) -> dict[str, Any]:
        """`prepare_edit`'s arguments (each file decoded once; a result of ours brings its own inputs)."""
        source = load_image(self.source, what=f"photo ({self.source})")
        parts, masks = {}, {}
        for label in PART_LABELS:
            path, mask_path = self.parts.get(label), self.masks.get(label)
            if mask_path and not path:
                raise Parts2WholeInputError(f"A mask was given for the new {label} ({mask_path}) but no picture for it.")
            if path:
                parts[label] = load_image(path, what=f"new {UI_SLOT_NAMES[label].lower()} image ({path})")
            if mask_path:
                masks[label] = load_mask(mask_path, parts[label].size, what=f"mask {mask_path}").mask
        region = load_mask(self.region, source.size, what=f"region {self.region}").mask if self.region else None
        pose = load_image(self.pose, what=f"pose map ({self.pose})").convert("RGB") if self.pose else None
        return dict(source=source, new_parts=parts, new_masks=masks, region=region, pose=pose,
                    result=result_inputs(self.source))

    def files(self) -> dict[str, str]:
        """The input files by role, for the parameters JSON."""
        record = {"source": str(self.source)}
        for label in PART_LABELS:
            for name, given in ((label, self.parts), (f"mask {label}", self.masks)):
                if given.get(label):
                    record[name] = str(given[label])
        return record | {key: str(value) for key, value in (("region", self.region), ("pose", self.pose)) if value}
