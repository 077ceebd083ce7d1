"""Behaviour of the pipeline: the official bugs stay fixed, determinism, labels, inputs, outputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import case_kwargs, load_case
from parts2whole import PART_LABELS, Parts2WholeInputError
from parts2whole.model.attention import self_attention_blocks
from tolerances import assert_same_run


def golden(pipe, root, name, **overrides):
    return pipe(**(case_kwargs(load_case(root, name)) | dict(output_type="np") | overrides)).images


# --- the official bugs, each pinned by a test that fails when the fix is reverted ----------------------

def test_prompt_changes_the_image(golden_pipe, golden_root):
    """Official bug: the user's prompt was replaced by the first label's embedding."""
    red = golden(golden_pipe, golden_root, "G1", prompt="a woman in a red shirt")
    blue = golden(golden_pipe, golden_root, "G1", prompt="a man in a blue coat")
    assert np.abs(red - blue).max() > 1e-3


def test_each_reference_is_encoded_with_its_own_label(golden_pipe):
    """Official bug: every reference after the first was encoded with the first label's text. The same
    image and mask under two labels must record different features."""
    image = Image.new("RGB", (64, 64), (120, 80, 200))
    encoding = golden_pipe.encode_references({"face": image, "shoes": image}, None, 64, 64)
    block = list(encoding.features.features)[-1]  # after cross-attention layers, where the label matters
    face, shoes = encoding.features.features[block].float()
    assert (face - shoes).abs().max() > 1e-3


def test_masks_are_applied(golden_pipe, golden_root):
    """Official bug: the script passed masks under a name the pipeline dropped."""
    with_masks = golden(golden_pipe, golden_root, "G1")
    without_masks = golden(golden_pipe, golden_root, "G1", masks=None)
    assert np.abs(with_masks - without_masks).max() > 1e-3


@pytest.mark.parametrize("guidance", [1.0, 0.5, 0.0])
def test_guidance_at_most_one_runs_without_classifier_free_guidance(golden_pipe, golden_root, guidance):
    """Official bug: UnboundLocalError for guidance_scale <= 1. Without guidance every value <= 1 is the
    same single-batch computation."""
    image = golden(golden_pipe, golden_root, "G3", guidance_scale=guidance)
    np.testing.assert_allclose(image, np.load(golden_root / "G3" / "expected.npy"), atol=1e-4, rtol=0)


def test_midup_fusion_runs_and_skips_down_blocks(golden_pipe, golden_root):
    """Official bug: fusion_blocks="midup" crashed. Down blocks then record and share nothing."""
    loaded = load_case(golden_root, "G1")
    encoding = golden_pipe.encode_references(loaded["references"], loaded["masks"], 128, 96, fusion_blocks="midup")
    assert len(encoding.features.features) == 10
    assert not any(name.startswith("down_blocks") for name in encoding.features.features)
    midup = golden(golden_pipe, golden_root, "G1", fusion_blocks="midup")
    full = golden(golden_pipe, golden_root, "G1")
    assert np.isfinite(midup).all() and np.abs(midup - full).max() > 1e-4


def test_fusion_sets_have_the_official_block_counts(golden_pipe):
    assert len(self_attention_blocks(golden_pipe.unet, "full")) == 16
    assert len(self_attention_blocks(golden_pipe.unet, "midup")) == 10


def test_negative_prompt_changes_only_the_unconditional_half(golden_pipe, golden_root):
    plain = golden(golden_pipe, golden_root, "G1")
    negative = golden(golden_pipe, golden_root, "G1", negative_prompt="blurry")
    assert np.abs(plain - negative).max() > 1e-4
    # Without guidance there is no unconditional half: the negative prompt has no effect.
    assert_same_run(golden(golden_pipe, golden_root, "G3"), golden(golden_pipe, golden_root, "G3", negative_prompt="blurry"))


# --- determinism, labels, inputs and outputs -----------------------------------------------------------

@pytest.fixture
def parts():
    face = Image.new("RGB", (40, 48), (220, 170, 140))
    top = Image.new("RGBA", (50, 60), (30, 60, 200, 255))
    return {"face": face, "top": top}


def tiny_call(pipe, parts, **overrides):
    kwargs = dict(references=parts, structure=Image.new("RGB", (64, 96), (10, 200, 30)), prompt="a person",
                  height=96, width=64, num_inference_steps=2, output_type="np")
    return pipe(**(kwargs | overrides)).images


def test_same_seed_or_same_latents_give_the_same_images(tiny_pipe, parts):
    first = tiny_call(tiny_pipe, parts, generator=torch.Generator().manual_seed(7))
    second = tiny_call(tiny_pipe, parts, generator=torch.Generator().manual_seed(7))
    other = tiny_call(tiny_pipe, parts, generator=torch.Generator().manual_seed(8))
    assert_same_run(first, second)
    assert np.abs(first - other).max() > 0
    latents = torch.randn(1, 4, 12, 8, generator=torch.Generator().manual_seed(3))
    assert_same_run(tiny_call(tiny_pipe, parts, latents=latents), tiny_call(tiny_pipe, parts, latents=latents.numpy()))


def test_aliases_map_to_official_labels(tiny_pipe, parts):
    official = {"face": parts["face"], "upper body clothes": parts["top"]}
    latents = np.zeros((1, 4, 12, 8), np.float32)
    assert_same_run(tiny_call(tiny_pipe, parts, latents=latents), tiny_call(tiny_pipe, official, latents=latents))
    assert tiny_pipe.encode_references(parts, None, 96, 64).labels == ("face", "upper body clothes")
    assert len(PART_LABELS) == 6


def test_structure_maps_of_any_mode_are_accepted(tiny_pipe, parts):
    rgb = Image.new("RGB", (64, 96), (90, 90, 90))
    latents = np.zeros((1, 4, 12, 8), np.float32)
    reference = tiny_call(tiny_pipe, parts, structure=rgb, latents=latents)
    for other in (rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P", palette=Image.Palette.ADAPTIVE)):
        assert_same_run(tiny_call(tiny_pipe, parts, structure=other, latents=latents), reference)


def test_output_types(tiny_pipe, parts):
    pil = tiny_call(tiny_pipe, parts, output_type="pil", num_images_per_prompt=2, generator=torch.Generator().manual_seed(0))
    assert len(pil) == 2 and pil[0].size == (64, 96) and pil[0].mode == "RGB"
    assert np.asarray(pil[0]).tobytes() != np.asarray(pil[1]).tobytes()
    latent = tiny_call(tiny_pipe, parts, output_type="latent")
    assert tuple(latent.shape) == (1, 4, 12, 8)


def test_cached_reference_encoding_gives_the_same_image(tiny_pipe, parts):
    latents = np.full((1, 4, 12, 8), 0.1, np.float32)
    encoding = tiny_pipe.encode_references(parts, None, 96, 64)
    assert_same_run(tiny_call(tiny_pipe, parts, latents=latents),
                                  tiny_call(tiny_pipe, None, latents=latents, reference_encoding=encoding))
    with pytest.raises(Parts2WholeInputError, match="another size"):
        tiny_call(tiny_pipe, None, reference_encoding=encoding, height=64)


def test_step_callback_sees_every_step_and_can_replace_latents(tiny_pipe, parts):
    steps = []

    def callback(pipe, index, timestep, tensors):
        steps.append((index, int(timestep)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    image = tiny_call(tiny_pipe, parts, num_inference_steps=3, callback_on_step_end=callback)
    assert steps == [(0, 667), (1, 334), (2, 1)]
    zero_latent_image = tiny_pipe.decode_latents(torch.zeros(1, 4, 12, 8), output_type="np")
    assert_same_run(image, zero_latent_image)


def test_misspelt_argument_is_an_error(tiny_pipe, parts):
    with pytest.raises(TypeError):
        tiny_call(tiny_pipe, parts, guidence_scale=2.0)


@pytest.mark.parametrize("overrides, message", [
    (dict(references={}), "at least one"),
    (dict(references={f"part{i}": Image.new("RGB", (8, 8)) for i in range(7)}), "At most 6"),
    (dict(references={"elbow": Image.new("RGB", (8, 8))}), "Unknown part label"),
    (dict(references={"top": Image.new("RGB", (8, 8)), "upper body clothes": Image.new("RGB", (8, 8))}), "Two references"),
    (dict(masks={"shoes": Image.new("L", (8, 8), 255)}), "no image for it"),
    (dict(masks={"face": Image.new("L", (40, 48), 0)}), "selects nothing"),
    (dict(masks={"face": Image.new("L", (48, 40), 255)}), "made for this image"),
    (dict(references={"face": Image.new("RGBA", (8, 8), (0, 0, 0, 0))}), "selects nothing"),
    (dict(height=100), "multiple of 8"),
    (dict(width=8), "between"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(guidance_scale=float("nan")), "guidance_scale"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(output_type="jpeg"), "output_type"),
    (dict(fusion_blocks="all"), "fusion_blocks"),
    (dict(structure=None), "pose"),
    (dict(references={"face": "face.png"}), "PIL image"),
    (dict(latents=np.zeros((1, 4, 8, 8), np.float32)), "latents must have shape"),
])
def test_bad_input_gets_a_clear_error(tiny_pipe, parts, overrides, message):
    with pytest.raises(Parts2WholeInputError, match=message):
        tiny_call(tiny_pipe, parts, **overrides)
