"""Each input is checked once on the way UI/CLI -> studio -> pipeline, and once by a plain pipeline call.

The checks are counted where they are looked up (model.validation's functions, the studio's request
module), over a real generation with the tiny model: the pipeline must check nothing the studio's
validated request already holds, and a validated request is never checked again.
"""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import ExifTags, Image

from app_fixtures import example_file
from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.model import schedulers, validation
from parts2whole.studio import GenerationRequest
from parts2whole.studio import request as request_module

#: (module, name) of every check on the path, each counted per call.
COUNTED = [
    (validation, "canonical_label"), (validation, "check_image"), (validation, "normalise_references"),
    (validation, "check_mask_shape"), (validation, "check_mask_selects"), (validation, "check_size"),
    (validation, "check_fusion_blocks"), (validation, "check_structure"), (validation, "check_steps"),
    (validation, "check_guidance"), (validation, "check_num_images"), (validation, "check_seed"),
    (validation, "canonical_scheduler_name"), (schedulers, "canonical_scheduler_name"),
    (request_module, "canonical_scheduler_name"), (request_module, "upright"),
]


@pytest.fixture
def counts(monkeypatch) -> Counter:
    calls: Counter = Counter()
    for module, name in COUNTED:
        original = getattr(module, name)

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    return calls


def rotated_jpeg(size=(96, 64)) -> Image.Image:
    """A photo stored sideways with EXIF orientation 6 (shown turned 90 degrees)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 90)).save(buffer, "JPEG", exif=exif.tobytes())
    return Image.open(io.BytesIO(buffer.getvalue()))


def request(**overrides) -> GenerationRequest:
    face = Image.open(example_file("face"))
    values = dict(references={"face": face, "top": Image.open(example_file("upper_body_clothes")), "shoes": rotated_jpeg()},
                  masks={"face": Image.new("L", face.size, 255), "shoes": None},
                  structure=Image.open(example_file("pose")), prompt="a person", seed=1, steps=1, height=64,
                  width=64, scheduler="DPMPP-2M")
    return GenerationRequest(**(values | overrides))


#: One check per input of `request()`: three parts, one mask, one pose map, one of each setting.
ONCE_EACH = {"canonical_label": 3 + 1, "check_image": 3 + 1 + 1, "normalise_references": 1, "check_mask_shape": 1,
             "check_mask_selects": 3, "check_size": 1, "check_fusion_blocks": 1, "check_structure": 1,
             "check_steps": 1, "check_guidance": 1, "check_num_images": 1, "check_seed": 1,
             "canonical_scheduler_name": 1, "upright": 3 + 1 + 1}


def test_one_studio_generation_checks_each_input_once(tiny_studio, counts):
    validated = request().validated()
    assert dict(counts) == ONCE_EACH
    assert validated.references["shoes"].size == (64, 96)  # the EXIF rotation was applied (once)
    assert validated.scheduler == "dpmpp_2m" and list(validated.references) == ["face", "upper body clothes", "shoes"]
    assert validated.validated() is validated  # validated already: returned as it is, nothing checked
    result = tiny_studio.generate(validated)  # the studio and the pipeline check nothing again
    assert dict(counts) == ONCE_EACH
    assert result.images and result.request.seed == 1


def test_an_unvalidated_request_is_checked_once_by_generate(tiny_studio, counts):
    result = tiny_studio.generate(request(seed=None))  # a seed is drawn: checked once too, as a new input
    assert dict(counts) == ONCE_EACH
    assert result.request.is_validated and result.request.seed is not None


def test_a_replaced_request_is_validated_anew(counts):
    import dataclasses

    validated = request().validated()
    changed = dataclasses.replace(validated, steps=10**9)
    assert not changed.is_validated
    with pytest.raises(Parts2WholeInputError, match="Steps"):
        changed.validated()


def test_a_plain_pipeline_call_normalises_its_references_once(tiny_pipe, counts):
    image = Image.new("RGB", (48, 64), (120, 80, 200))
    tiny_pipe(references={"face": image, "shoes": image}, masks={"face": Image.new("L", (48, 64), 255)},
              structure=Image.new("RGB", (64, 96)), height=96, width=64, num_inference_steps=1, output_type="latent",
              scheduler="UniPC")
    assert counts["normalise_references"] == 1
    assert counts["canonical_label"] == 2 + 1 and counts["check_image"] == 2 + 1 + 1
    assert counts["check_mask_selects"] == 2 and counts["check_size"] == 1 and counts["check_fusion_blocks"] == 1
    assert counts["canonical_scheduler_name"] == 1
    tiny_pipe.encode_references({"face": image}, None, 96, 64)  # called directly: checks once itself
    assert counts["normalise_references"] == 2 and counts["check_size"] == 2
