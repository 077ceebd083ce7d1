"""The edit pipeline on the tiny model: kept pixels are the source's, the region changes, a seed reproduces,
strength near 0 returns the source, and per-reference encodings combine to the batched one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.model.edit_region import feathered_alpha
from parts2whole.model.editing import Parts2WholeEditPipeline, crop_box
from parts2whole.model.pipeline import ReferenceEncoding

# A landscape source (model aspect is portrait) of an odd size, a person box drawn on the pose map.
SOURCE_SIZE = (212, 150)


@pytest.fixture(scope="module")
def edit_pipe(tiny_pipe):
    return Parts2WholeEditPipeline.from_pipe(tiny_pipe)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 256, (SOURCE_SIZE[1], SOURCE_SIZE[0], 3), dtype=np.uint8))
    region = Image.new("L", SOURCE_SIZE, 0)
    ImageDraw.Draw(region).rectangle((90, 100, 130, 135), fill=255)
    pose = Image.new("RGB", SOURCE_SIZE)
    ImageDraw.Draw(pose).rectangle((80, 8, 140, 145), fill=(24, 130, 200))
    part = Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    return source, region, pose, part


def _edit(pipe, scene, seed=1, **kwargs):
    source, region, pose, part = scene
    arguments = dict(image=source, mask_image=region, references={"shoes": part}, structure=pose, height=96, width=64,
                     num_inference_steps=2, generator=torch.Generator().manual_seed(seed), output_type="np")
    return pipe(**(arguments | kwargs)).images[0] * 255.0


def test_kept_pixels_are_the_source_and_the_region_changes(edit_pipe, scene):
    source, region, _, _ = scene
    edited = _edit(edit_pipe, scene)
    assert edited.shape == (SOURCE_SIZE[1], SOURCE_SIZE[0], 3)  # the source's size, not the model's
    alpha = np.asarray(feathered_alpha(region, 8))
    original = np.asarray(source, dtype=np.float32)
    outside, inside = alpha == 0, alpha == 255
    assert outside.sum() > 0.8 * outside.size
    np.testing.assert_allclose(edited[outside], original[outside], atol=1.0)
    assert np.abs(edited[inside] - original[inside]).mean() > 10.0


def test_one_seed_one_result_and_another_seed_differs(edit_pipe, scene):
    first, again, other = _edit(edit_pipe, scene, 5), _edit(edit_pipe, scene, 5), _edit(edit_pipe, scene, 6)
    np.testing.assert_allclose(first, again, atol=1.0)
    assert np.abs(first - other).max() > 10.0


def test_strength_near_zero_returns_the_source(edit_pipe, scene):
    edited = _edit(edit_pipe, scene, strength=0.01)
    np.testing.assert_allclose(edited, np.asarray(scene[0], dtype=np.float32), atol=1.0)


def test_partial_strength_with_a_multistep_solver_keeps_the_outside(edit_pipe, scene):
    source, region, _, _ = scene
    edited = _edit(edit_pipe, scene, strength=0.6, num_inference_steps=4, scheduler="dpmpp_2m")
    outside = np.asarray(feathered_alpha(region, 8)) == 0
    np.testing.assert_allclose(edited[outside], np.asarray(source, dtype=np.float32)[outside], atol=1.0)


def test_crop_box_holds_region_and_person_at_the_model_aspect(scene):
    _, region, pose, _ = scene
    x0, y0, x1, y1 = crop_box(feathered_alpha(region, 8), pose, 64, 96, 4)
    assert x0 <= 80 and x1 >= 141 and y0 <= 8 and y1 >= 136
    assert abs((x1 - x0) / (y1 - y0) - 64 / 96) < 0.05


@pytest.mark.parametrize("region_fill, message", [(0, "empty"), (255, "covers")])
def test_a_region_that_is_empty_or_everything_is_refused(edit_pipe, scene, region_fill, message):
    with pytest.raises(Parts2WholeInputError, match=message):
        _edit(edit_pipe, scene, mask_image=Image.new("L", SOURCE_SIZE, region_fill))


def test_a_tiny_source_is_refused(edit_pipe, scene):
    with pytest.raises(Parts2WholeInputError, match="too small"):
        _edit(edit_pipe, scene, image=Image.new("RGB", (40, 30)), mask_image=Image.new("L", (40, 30), 255))


def test_per_reference_encodings_combine_to_the_batched_encoding(tiny_pipe):
    rng = np.random.default_rng(0)
    references = {label: Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8))
                  for label in ("face", "upper body clothes", "shoes")}
    batched = tiny_pipe.encode_references(references, height=64, width=64)
    singles = [tiny_pipe.encode_references({label: image}, height=64, width=64) for label, image in references.items()]
    combined = ReferenceEncoding.combine(singles)
    assert combined.labels == batched.labels
    for block, value in batched.features.features.items():
        torch.testing.assert_close(combined.features.features[block].float(), value.float(), atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(combined.features.token_weights[block], batched.features.token_weights[block])
    torch.testing.assert_close(combined.image_tokens, batched.image_tokens, atol=1e-4, rtol=1e-4)
    resplit = batched.split()
    assert [part.labels for part in resplit] == [(label,) for label in references]
    assert sum(part.nbytes for part in resplit) == batched.nbytes


def test_making_the_edit_pipeline_keeps_the_shared_modules_dtype(tiny_checkpoint):
    """diffusers' `from_pipe` casts to float32 unless told the dtype: a float16 app's model must stay float16."""
    from parts2whole import Parts2WholePipeline

    half = Parts2WholePipeline.from_pretrained(tiny_checkpoint, torch_dtype=torch.bfloat16)
    Parts2WholeEditPipeline.from_pipe(half)
    assert {module.dtype for module in (half.unet, half.reference_unet, half.vae, half.image_encoder)} == {torch.bfloat16}
