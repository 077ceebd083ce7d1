"""One generation described by files: what `python -m parts2whole generate` and a batch manifest line give.

`GenerationInputs` holds the file paths and the settings (with the defaults of `generate`); `load_request`
decodes each file once and returns the studio's `GenerationRequest`, validated once: pass it on as it is
(`Studio.generate` trusts a validated request). `output_paths` and `output_parameters` name the images a
generation writes and say, in its JSON, what it was made from. The CLI builds the inputs from its options,
a batch from each manifest line; neither goes through the other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PIL import Image

from preprocess.images import load_image, load_mask, load_rgb

from ..core.errors import Parts2WholeInputError
from ..core.labels import PART_LABELS, UI_SLOT_NAMES
from . import (DEFAULT_FUSION_BLOCKS, DEFAULT_GUIDANCE, DEFAULT_HEIGHT, DEFAULT_SCHEDULER, DEFAULT_STEPS,
               DEFAULT_WIDTH, GenerationRequest, GenerationResult)

#: The settings of a generation, by the names the CLI options, the manifest keys and these inputs share.
SETTING_NAMES = ("prompt", "negative_prompt", "seed", "steps", "guidance", "height", "width", "num_images",
                 "fusion_blocks", "scheduler")


@dataclasses.dataclass
class GenerationInputs:
    """The files and settings of one generation, as given (numbers may still be text: `load_request` checks).

    parts and masks map part labels ("face", "upper body clothes", ...) to image paths. The pose is either a
    pose map (`pose`) or a photo a map is to be made from (`pose_photo`; see `load_request`).
    """

    parts: dict[str, str] = dataclasses.field(default_factory=dict)
    masks: dict[str, str] = dataclasses.field(default_factory=dict)
    pose: str | None = None
    pose_photo: str | None = None
    prompt: Any = ""
    negative_prompt: Any = ""
    seed: Any = None  # None: a random one, recorded in the result
    steps: Any = DEFAULT_STEPS
    guidance: Any = DEFAULT_GUIDANCE
    height: Any = DEFAULT_HEIGHT
    width: Any = DEFAULT_WIDTH
    num_images: Any = 1
    fusion_blocks: Any = DEFAULT_FUSION_BLOCKS
    scheduler: Any = DEFAULT_SCHEDULER

    def files(self) -> dict[str, str]:
        """The input files by part (and "mask <part>", "pose" or "pose photo"): what a result was made from."""
        record = {}
        for label in PART_LABELS:
            for name, given in ((label, self.parts), (f"mask {label}", self.masks)):
                if given.get(label):
                    record[name] = str(given[label])
        if self.pose_photo:
            record["pose photo"] = str(self.pose_photo)
        else:
            record["pose"] = str(self.pose)
        return record


def load_request(inputs: GenerationInputs) -> GenerationRequest:
    """The request these inputs stand for, validated (raises Parts2WholeInputError with a one-line reason).

    Each file is decoded once. With `pose_photo`, the photo (upright, transparency on white) stands in for
    the pose map, so that every setting is checked before a long model load; the caller makes the map from
    `request.structure` and swaps it in with `with_pose_map`.
    """
    references, masks = {}, {}
    for label in PART_LABELS:
        path, mask_path = inputs.parts.get(label), inputs.masks.get(label)
        if path:
            references[label] = load_image(path, what=f"{UI_SLOT_NAMES[label].lower()} image ({path})")
        if mask_path:
            if not path:
                raise Parts2WholeInputError(f"A mask was given for {label!r} ({mask_path}) but no image for that part.")
            masks[label] = load_mask(mask_path, references[label].size, what=f"mask {mask_path}").mask
    request = GenerationRequest(
        references=references, masks=masks, structure=_load_pose(inputs), prompt=inputs.prompt,
        negative_prompt=inputs.negative_prompt, seed=inputs.seed, steps=inputs.steps, guidance_scale=inputs.guidance,
        height=inputs.height, width=inputs.width, num_images=inputs.num_images, fusion_blocks=inputs.fusion_blocks,
        scheduler=inputs.scheduler)
    return request.validated()


def _load_pose(inputs: GenerationInputs) -> Image.Image:
    if inputs.pose_photo:
        return load_rgb(inputs.pose_photo, what=f"photo ({inputs.pose_photo})")
    if not inputs.pose:
        raise Parts2WholeInputError("Add a pose map (the structure image the person is drawn on).")
    return load_image(inputs.pose, what=f"pose map ({inputs.pose})").convert("RGB")


def with_pose_map(request: GenerationRequest, pose_map: Image.Image) -> GenerationRequest:
    """The validated request with the pose map made from its photo in place of the photo.

    The map is made at the request's size by the studio's preprocessing, so the request stays valid.
    """
    return dataclasses.replace(request, structure=pose_map.convert("RGB"))


def output_paths(output: Path, count: int) -> list[Path]:
    """out.png for one image; out_0.png, out_1.png, ... for several."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{index}{output.suffix}") for index in range(count)]


def output_parameters(result: GenerationResult, paths: list[Path], inputs: GenerationInputs) -> dict[str, Any]:
    """What out.json holds: the studio's parameters, the images written and the input files they came from."""
    return result.parameters | {"outputs": [path.name for path in paths], "inputs": inputs.files()}
