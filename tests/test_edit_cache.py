"""The per-reference feature cache: golden parity when a set is assembled from single entries, and a
generation that swaps one part encodes only that part."""

from __future__ import annotations

import numpy as np
from PIL import Image

from app_fixtures import example_file
from conftest import case_kwargs, load_case
from parts2whole.model.pipeline import ReferenceEncoding
from parts2whole.studio import GenerationRequest


def test_golden_output_from_per_reference_encodings(golden_pipe, golden_root):
    """G2 has all six parts: encoded one at a time and combined, it still matches the official output."""
    loaded = load_case(golden_root, "G2")
    case = loaded["case"]
    singles = [golden_pipe.encode_references({label: image}, {label: loaded["masks"][label]} if label in loaded["masks"]
                                             else None, case["height"], case["width"], case["reference_fusion_blocks"])
               for label, image in loaded["references"].items()]
    combined = ReferenceEncoding.combine(singles)
    kwargs = case_kwargs(loaded) | dict(output_type="np", reference_encoding=combined)
    image = golden_pipe(**kwargs).images
    expected = np.load(golden_root / "G2" / "expected.npy")
    np.testing.assert_allclose(image, expected, rtol=0, atol=case["tolerance"]["expected_atol"])


def _request(**parts) -> GenerationRequest:
    references = {"face": Image.open(example_file("face")),
                  "upper body clothes": Image.open(example_file("upper_body_clothes"))} | parts
    return GenerationRequest(references=references, structure=Image.open(example_file("pose")), seed=1, steps=1,
                             height=64, width=64)


def test_swapping_one_part_encodes_only_that_part(tiny_studio, monkeypatch):
    pipe = tiny_studio.pipeline()
    tiny_studio.reference_cache.clear()
    encoded = []
    original = pipe.encode_checked
    monkeypatch.setattr(pipe, "encode_checked",
                        lambda references, *a, **k: encoded.append(references.labels) or original(references, *a, **k))
    first = tiny_studio.generate(_request())
    new_top = Image.open(example_file("upper_body_clothes")).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    swapped = tiny_studio.generate(_request(**{"upper body clothes": new_top}))
    again = tiny_studio.generate(_request(**{"upper body clothes": new_top}))
    assert encoded == [("face", "upper body clothes"), ("upper body clothes",)]
    assert not first.reused_references and not swapped.reused_references and again.reused_references
    assert len(tiny_studio.reference_cache) == 3  # face, old top, new top: one entry each
    assert tiny_studio.reference_cache.total_bytes <= tiny_studio.reference_cache.max_bytes
