"""Property-based: generated bad requests always end in Parts2WholeInputError with a message, quickly."""

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from parts2whole import Parts2WholeInputError
from parts2whole.core.labels import PART_LABELS
from parts2whole.model.validation import MAX_IMAGE_PIXELS, check_request

#: Each request must be judged well within this many seconds (no decoding, no model work).
SECONDS_PER_CHECK = 0.5
EXAMPLES = 250

GOOD = dict(references={"face": Image.new("RGB", (16, 16))}, masks=None, structure=Image.new("RGB", (16, 16)),
            prompt="a person", negative_prompt=None, height=768, width=512, num_inference_steps=30,
            guidance_scale=3.5, num_images_per_prompt=1, output_type="pil", fusion_blocks="full",
            has_reference_encoding=False)

small_image = st.builds(lambda w, h, mode: Image.new(mode, (w, h)), st.integers(1, 24), st.integers(1, 24),
                        st.sampled_from(["RGB", "RGBA", "L", "P", "1", "I;16", "CMYK"]))
not_an_image = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=8), st.lists(st.integers(), max_size=3))
huge_image = st.just(Image.new("1", (MAX_IMAGE_PIXELS // 1000 + 1, 1000)))
unknown_label = st.text(min_size=0, max_size=12).filter(lambda t: " ".join(t.lower().replace("_", " ").replace("-", " ").split())
                                                        not in PART_LABELS + ("hair", "headwear", "hat", "top", "upper", "upper body",
                                                                              "shirt", "bottom", "lower", "lower body", "pants", "dress",
                                                                              "whole body", "whole", "shoe"))
bad_number = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just(float("nan")), st.just(float("inf")),
                       st.integers(max_value=0), st.integers(min_value=10_000), st.floats(-100, -0.001))

bad_requests = st.one_of(
    st.builds(lambda: dict(references={})),
    st.builds(lambda refs: dict(references=refs), st.dictionaries(unknown_label, small_image, min_size=1, max_size=3)),
    st.builds(lambda n: dict(references={f"face{'!' * i}": Image.new("RGB", (4, 4)) for i in range(n)}), st.integers(7, 12)),
    st.builds(lambda v: dict(references={"face": v}), not_an_image),
    st.builds(lambda v: dict(references={"face": v}), huge_image),
    st.builds(lambda: dict(references={"top": Image.new("RGB", (4, 4)), "upper body clothes": Image.new("RGB", (4, 4))})),
    st.builds(lambda label: dict(masks={label: Image.new("L", (16, 16), 255)}), st.sampled_from(PART_LABELS[1:])),
    st.builds(lambda w: dict(masks={"face": Image.new("L", (w, 16 * 4))}), st.integers(1, 15)),
    st.builds(lambda v: dict(masks={"face": v}), not_an_image.filter(lambda v: v is not None)),
    st.builds(lambda v: dict(masks=v), st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2))),
    st.builds(lambda v: dict(structure=v), not_an_image),
    st.builds(lambda v: dict(height=v), st.one_of(bad_number, st.integers(65, 2047).filter(lambda n: n % 8), st.integers(2049, 10**6))),
    st.builds(lambda v: dict(width=v), st.one_of(bad_number, st.integers(1, 63))),
    st.builds(lambda v: dict(num_inference_steps=v), st.one_of(bad_number, st.floats(1.5, 10))),
    st.builds(lambda v: dict(guidance_scale=v), st.one_of(st.just(float("nan")), st.just(float("-inf")), st.floats(-1e6, -1e-6),
                                                        st.floats(50.001, 1e9), st.text(max_size=2), st.none(), st.booleans())),
    st.builds(lambda v: dict(num_images_per_prompt=v), bad_number),
    st.builds(lambda v: dict(output_type=v), st.text(max_size=6).filter(lambda t: t not in ("pil", "np", "latent"))),
    st.builds(lambda v: dict(fusion_blocks=v), st.one_of(st.none(), st.text(max_size=6).filter(lambda t: t not in ("full", "midup")))),
    st.builds(lambda v: dict(prompt=v), st.one_of(st.integers(), st.binary(max_size=4), st.lists(st.text(max_size=2), max_size=2))),
    st.builds(lambda v: dict(negative_prompt=v), st.one_of(st.integers(), st.floats(allow_nan=True))),
)


def test_a_good_request_passes():
    assert check_request(**GOOD).settings.num_inference_steps == 30


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bad_requests)
def test_every_bad_request_gets_a_clear_message(overrides):
    started = time.perf_counter()
    with pytest.raises(Parts2WholeInputError) as error:
        check_request(**(GOOD | overrides))
    assert time.perf_counter() - started < SECONDS_PER_CHECK
    message = str(error.value)
    assert len(message) > 20 and "Traceback" not in message and not math.isnan(len(message))
