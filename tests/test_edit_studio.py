"""Edits through the studio on the tiny model: the source's own parts become the kept references, the
output keeps the source outside the region at the source's size, a result's references are reused (only
the new part is encoded), and each bad input gets its message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.model.edit_region import DEFAULT_FEATHER, feathered_alpha
from parts2whole.studio import GenerationRequest
from parts2whole.studio.edit_request import EditRequest
from parts2whole.studio.edit_sources import ServiceAnalysis, cut_part, prepare_edit, result_inputs
from parts2whole.studio.preprocessing import DENSEPOSE, PreprocessingService
from preprocess.densepose import NoPersonFound

SIZE = (232, 168)  # landscape: the model's working aspect is portrait
BOXES = {"face": (100, 10, 130, 40), "upper body clothes": (90, 45, 140, 95), "lower body clothes": (95, 95, 135, 140),
         "shoes": (95, 145, 135, 160)}


def _noise(height, width, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


class StubAnalysis:
    """Parts at fixed boxes, a person-shaped pose map; counts its calls."""

    def __init__(self, person=True):
        self.person, self.calls = person, []

    def part_masks(self, image):
        self.calls.append("parts")
        masks = {}
        for label, box in BOXES.items():
            mask = Image.new("L", image.size, 0)
            ImageDraw.Draw(mask).rectangle(box, fill=255)
            masks[label] = mask
        return masks

    def pose_map(self, image):
        self.calls.append("pose")
        if not self.person:
            raise NoPersonFound()
        pose = Image.new("RGB", image.size)
        ImageDraw.Draw(pose).rectangle((88, 8, 142, 162), fill=(30, 140, 200))
        return pose


SETTINGS = dict(steps=2, height=96, width=64, seed=3)


@pytest.fixture(scope="module")
def source():
    return _noise(SIZE[1], SIZE[0], 0)


@pytest.fixture(scope="module")
def new_shoes():
    return _noise(40, 56, 1)


def test_kept_references_are_the_sources_own_parts(source, new_shoes):
    request = prepare_edit(StubAnalysis(), source, new_parts={"shoes": new_shoes}, **SETTINGS)
    assert request.changed == ("shoes",)
    assert list(request.references) == ["face", "upper body clothes", "lower body clothes", "shoes"]
    for label in ("face", "upper body clothes", "lower body clothes"):
        x0, y0, x1, y1 = BOXES[label]
        reference, mask = request.references[label], np.asarray(request.masks[label])
        assert reference.size[0] >= x1 - x0 + 1 and reference.size[1] >= y1 - y0 + 1
        # the reference is a window of the source: find it by its mask's box and compare pixels
        expected, expected_mask = cut_part(source, StubAnalysis().part_masks(source)[label])
        assert np.array_equal(np.asarray(reference), np.asarray(expected))
        assert np.array_equal(mask, np.asarray(expected_mask)) and mask.max() == 255
    assert np.asarray(request.references["shoes"]).shape == np.asarray(new_shoes.convert("RGB")).shape
    region = np.asarray(request.region) > 0
    x0, y0, x1, y1 = BOXES["shoes"]
    assert region[y0:y1 + 1, x0:x1 + 1].all() and not region[:60].any()  # the shoes, grown a little, only


def test_changing_a_garment_drops_the_whole_outfit_part(source):
    class WithOutfit(StubAnalysis):
        def part_masks(self, image):
            masks = super().part_masks(image)
            masks["whole body clothes"] = masks["upper body clothes"]
            return masks

    request = prepare_edit(WithOutfit(), source, new_parts={"top": _noise(50, 40, 2)}, **SETTINGS)
    assert "whole body clothes" not in request.references
    assert "dropped" in request.origin["dropped"]["whole body clothes"]
    outfit = prepare_edit(WithOutfit(), source, new_parts={"dress": _noise(50, 40, 2)}, **SETTINGS)
    assert set(outfit.references) == {"face", "whole body clothes", "shoes"}


def test_edit_keeps_the_source_outside_the_region_at_its_size(tiny_studio, source, new_shoes):
    request = prepare_edit(StubAnalysis(), source, new_parts={"shoes": new_shoes}, **SETTINGS)
    result = tiny_studio.edit(request)
    edited = np.asarray(result.images[0], dtype=np.float32)
    assert result.images[0].size == SIZE
    alpha = np.asarray(feathered_alpha(request.region, DEFAULT_FEATHER))
    original = np.asarray(source, dtype=np.float32)
    np.testing.assert_allclose(edited[alpha == 0], original[alpha == 0], atol=1.0)
    assert np.abs(edited[alpha == 255] - original[alpha == 255]).mean() > 10.0
    assert result.parameters["mode"] == "edit" and result.parameters["change"] == ["shoes"]
    again = tiny_studio.edit(request)
    np.testing.assert_allclose(np.asarray(again.images[0], dtype=np.float32), edited, atol=1.0)


def test_editing_a_result_reuses_its_references_and_encodes_only_the_new_part(tiny_studio, tmp_path, monkeypatch):
    face, top, pose = _noise(48, 40, 5), _noise(56, 48, 6), StubAnalysis().pose_map(Image.new("RGB", (64, 96)))
    for name, image in (("face.png", face), ("top.png", top), ("pose.png", pose)):
        image.save(tmp_path / name)
    generated = tiny_studio.generate(GenerationRequest(
        references={"face": face, "upper body clothes": top}, structure=pose, seed=2, steps=1, height=96, width=64))
    generated.images[0].save(tmp_path / "out.png")
    (tmp_path / "out.json").write_text(json.dumps(generated.parameters | {
        "outputs": ["out.png"], "inputs": {"face": "face.png", "upper body clothes": "top.png", "pose": "pose.png"}}))
    found = result_inputs(tmp_path / "out.png")
    assert found is not None and set(found.references) == {"face", "upper body clothes"}
    assert result_inputs(tmp_path / "face.png") is None  # an input, not a result
    bundle = tmp_path / "bundle"  # an unzipped app bundle: results/, inputs/, masks/, parameters.json
    for folder in ("results", "inputs", "masks"):
        (bundle / folder).mkdir(parents=True)
    generated.images[0].save(bundle / "results" / "result_0.png")
    face.save(bundle / "inputs" / "face.png"), pose.save(bundle / "inputs" / "pose.png")
    Image.new("L", face.size, 255).save(bundle / "masks" / "face.png")
    (bundle / "parameters.json").write_text(json.dumps(generated.parameters | {"parts": ["face"], "masked_parts": ["face"]}))
    bundled = result_inputs(bundle / "results" / "result_0.png")
    assert bundled is not None and list(bundled.references) == ["face"] and bundled.pose.size == pose.size
    assert list(bundled.masks) == ["face"]
    pipe = tiny_studio.pipeline()
    encoded = []
    original = pipe.encode_checked
    monkeypatch.setattr(pipe, "encode_checked",
                        lambda references, *a, **k: encoded.append(references.labels) or original(references, *a, **k))
    region = Image.new("L", (64, 96), 0)
    ImageDraw.Draw(region).rectangle((10, 40, 50, 70), fill=255)
    analysis = StubAnalysis()
    request = prepare_edit(analysis, Image.open(tmp_path / "out.png"), new_parts={"top": _noise(50, 44, 7)},
                           region=region, result=found, steps=1, height=96, width=64, seed=4)
    assert analysis.calls == []  # references, pose and region all came with the result
    assert np.array_equal(np.asarray(request.references["face"]), np.asarray(face))
    result = tiny_studio.edit(request)
    assert encoded == [("upper body clothes",)] and result.images[0].size == (64, 96)


@pytest.fixture(scope="module")
def no_person_service(tiny_studio):
    service = PreprocessingService(tiny_studio)
    service._models[DENSEPOSE] = lambda photo: (_ for _ in ()).throw(NoPersonFound())  # a stub estimator
    return service


def test_no_person_found_through_the_preprocessing_service(no_person_service, source, new_shoes):
    with pytest.raises(Parts2WholeInputError, match="(?i)no person"):
        prepare_edit(ServiceAnalysis(no_person_service), source, new_parts={"shoes": new_shoes},
                     **SETTINGS)


@pytest.mark.parametrize("case, message", [
    ("empty region", "region to change is empty"),
    ("whole region", "covers 100%"),
    ("no new picture", "has no new picture"),
    ("nothing to change", "Name a part to change"),
    ("picture not named", "not among the parts to change"),
    ("small source", "too small"),
    ("large source", "megapixels"),
    ("part not found", "No shoes found"),
])
def test_bad_input_gets_its_message(source, new_shoes, case, message):
    arguments = dict(new_parts={"shoes": new_shoes}, **SETTINGS)
    if case == "empty region":
        arguments["region"] = Image.new("L", SIZE, 0)
    elif case == "whole region":
        arguments["region"] = Image.new("RGB", SIZE, (255, 255, 255))  # a 3-channel mask
    elif case == "no new picture":
        arguments["change"] = "shoes, top"
    elif case == "picture not named":
        arguments |= dict(change="shoes", new_parts={"shoes": new_shoes, "face": new_shoes})
    elif case == "nothing to change":
        arguments["new_parts"] = {}
    elif case == "small source":
        source = Image.new("RGB", (60, 40))
    elif case == "large source":
        source = Image.new("L", (8000, 6000))
    analysis = StubAnalysis()
    if case == "part not found":
        analysis.part_masks = lambda image: {}
    with pytest.raises(Parts2WholeInputError, match=message):
        prepare_edit(analysis, source, **arguments)


def test_a_validated_edit_request_is_trusted_and_refuses_a_missing_picture(source, new_shoes):
    request = prepare_edit(StubAnalysis(), source, new_parts={"shoes": new_shoes}, **SETTINGS)
    assert request.validated() is request
    with pytest.raises(Parts2WholeInputError, match="has no new picture"):
        EditRequest(source=source, changed=("face",), references={"shoes": new_shoes}, structure=source,
                    region=request.region).validated()


def test_without_the_parts_parsed_the_region_falls_back_to_the_densepose_body_areas(source, new_shoes):
    class FeetOnTheMap(StubAnalysis):
        def part_masks(self, image):
            return {}  # the parser finds nothing

        def pose_map(self, image):
            pose = super().pose_map(image)
            ImageDraw.Draw(pose).rectangle(BOXES["shoes"], fill=(40, 90, 5))  # I = 5: a foot
            return pose

    request = prepare_edit(FeetOnTheMap(), source, new_parts={"shoes": new_shoes}, **SETTINGS)
    region = np.asarray(request.region) > 0
    x0, y0, x1, y1 = BOXES["shoes"]
    assert region[y0:y1 + 1, x0:x1 + 1].all() and not region[:100].any()
    assert "DensePose" in request.origin["region"] and request.references.keys() == {"shoes"}
