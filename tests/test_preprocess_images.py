"""Safe image/mask loading: every accepted source type, every mode, every refusal."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from parts2whole.core.errors import Parts2WholeInputError
from preprocess import images
from preprocess.images import (
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    binarize_mask,
    flatten_alpha,
    is_empty_mask,
    load_image,
    load_mask,
    load_rgb,
    mask_coverage,
)


def _png_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def _two_colour_image() -> Image.Image:
    array = np.zeros((16, 24, 3), dtype=np.uint8)
    array[:, :12] = (200, 10, 20)
    array[:, 12:] = (5, 100, 250)
    return Image.fromarray(array)


# --- sources --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "str_path", "bytes", "bytearray", "file", "numpy", "pil"])
def test_every_source_type_gives_the_same_rgb_pixels(kind, tmp_path):
    original = _two_colour_image()
    data = _png_bytes(original)
    path = tmp_path / "in.png"
    path.write_bytes(data)
    source = {
        "path": path,
        "str_path": str(path),
        "bytes": data,
        "bytearray": bytearray(data),
        "file": io.BytesIO(data),
        "numpy": np.asarray(original),
        "pil": original,
    }[kind]
    loaded = load_image(source)
    assert loaded.mode == "RGB"
    assert loaded.size == (24, 16)
    assert np.array_equal(np.asarray(loaded), np.asarray(original))


def test_missing_path_is_a_clear_input_error(tmp_path):
    with pytest.raises(Parts2WholeInputError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_unsupported_source_type_is_refused():
    with pytest.raises(Parts2WholeInputError, match="Cannot read"):
        load_image(12345)


def test_text_mode_file_is_refused(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(_png_bytes(_two_colour_image()))
    with open(path, "r", encoding="latin-1") as handle, pytest.raises(Parts2WholeInputError, match="binary mode"):
        load_image(handle)


# --- orientation and frames -----------------------------------------------------------------------


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    wide.save(buffer, format="JPEG", exif=exif, quality=95)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == (20, 40)
    top_pixel = np.asarray(loaded)[2, 10]
    assert top_pixel[2] > 200 and top_pixel[0] < 60  # the left (blue) strip is now on top


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load_image(buffer.getvalue())
    red, green, blue = np.asarray(loaded)[8, 8]
    assert red > 200 and blue < 50


# --- modes ----------------------------------------------------------------------------------------


def test_palette_without_transparency_becomes_rgb():
    image = _two_colour_image().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    loaded = load_image(_png_bytes(image))
    assert loaded.mode == "RGB"


def test_palette_with_transparent_index_becomes_rgba_with_that_alpha():
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    image.paste(1, (0, 0, 8, 16))
    loaded = load_image(_png_bytes(image, transparency=0))
    assert loaded.mode == "RGBA"
    alpha = np.asarray(loaded.getchannel("A"))
    assert alpha[:, :8].min() == 255 and alpha[:, 8:].max() == 0


def test_fully_opaque_alpha_is_dropped_but_real_transparency_is_kept():
    opaque = Image.new("RGBA", (16, 16), (10, 20, 30, 255))
    assert load_image(opaque).mode == "RGB"
    assert load_image(Image.new("LA", (16, 16), (99, 255))).mode == "RGB"
    see_through = Image.new("RGBA", (16, 16), (10, 20, 30, 255))
    see_through.putpixel((0, 0), (10, 20, 30, 0))
    loaded = load_image(see_through)
    assert loaded.mode == "RGBA" and loaded.getpixel((0, 0))[3] == 0


def test_cmyk_jpeg_becomes_rgb():
    buffer = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buffer, format="JPEG")
    loaded = load_image(buffer.getvalue())
    assert loaded.mode == "RGB"
    red, green, blue = loaded.getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_sixteen_bit_grey_is_scaled_to_eight_bits():
    array = np.full((16, 16), 65535, dtype=np.uint16)
    array[:, :8] = 257 * 100
    image = Image.fromarray(array)
    loaded = load_image(_png_bytes(image))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((12, 4)) == (255, 255, 255)
    assert loaded.getpixel((2, 4)) == (100, 100, 100)


def test_float_image_in_zero_one_range_is_scaled():
    loaded = load_image(Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32), mode="F"))
    assert loaded.getpixel((0, 0)) == (128, 128, 128)


def test_bilevel_image_becomes_black_and_white_rgb():
    image = Image.new("1", (16, 16), 0)
    image.paste(1, (0, 0, 8, 16))
    loaded = load_image(image)
    assert loaded.getpixel((1, 1)) == (255, 255, 255) and loaded.getpixel((12, 1)) == (0, 0, 0)


def test_numpy_float_and_bool_arrays_are_accepted():
    assert load_image(np.full((10, 10, 3), 1.0)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.ones((10, 10), dtype=bool)).getpixel((0, 0)) == (255, 255, 255)
    rgba = load_image(np.zeros((10, 10, 4), dtype=np.uint8))
    assert rgba.mode == "RGBA"


def test_numpy_array_of_wrong_shape_is_refused():
    with pytest.raises(Parts2WholeInputError, match="shape"):
        load_image(np.zeros((10, 10, 2), dtype=np.uint8))


def test_load_rgb_composites_transparency_over_white():
    image = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert load_rgb(image).getpixel((3, 3)) == (255, 255, 255)
    assert flatten_alpha(image, (0, 0, 0)).getpixel((3, 3)) == (0, 0, 0)


# --- limits and refusals --------------------------------------------------------------------------


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat_payload = zlib.compress(b"\x00" * 10)
    idat = struct.pack(">I", len(idat_payload)) + b"IDAT" + idat_payload + struct.pack(">I", zlib.crc32(b"IDAT" + idat_payload))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat + iend


def test_pixel_limit_is_checked_before_any_pixel_is_decoded(monkeypatch):
    def refuse_to_decode(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_decode)
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    with pytest.raises(Parts2WholeInputError, match="megapixels"):
        load_image(_png_header_claiming(side, side))


def test_image_just_under_the_limit_passes_the_size_check():
    images.check_image_size((MAX_IMAGE_PIXELS // 5000, 5000))


def test_too_small_and_too_elongated_images_are_refused():
    with pytest.raises(Parts2WholeInputError, match=f"at least {MIN_IMAGE_SIDE}"):
        load_image(Image.new("RGB", (MIN_IMAGE_SIDE - 1, 32)))
    with pytest.raises(Parts2WholeInputError, match="longer than wide"):
        load_image(Image.new("RGB", (400, 10)))


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(Parts2WholeInputError, match="empty"):
        load_image(path)


def test_truncated_png_is_refused():
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(Parts2WholeInputError, match="damaged"):
        load_image(data[: len(data) // 2])


def test_corrupt_header_is_refused():
    with pytest.raises(Parts2WholeInputError):
        load_image(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)


def test_text_file_is_not_an_image():
    with pytest.raises(Parts2WholeInputError, match="not an image"):
        load_image(b"name,score\nalice,3\n")


def test_svg_and_pdf_get_an_export_hint():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    with pytest.raises(Parts2WholeInputError, match="SVG.*Export it as PNG"):
        load_image(svg)
    with pytest.raises(Parts2WholeInputError, match="PDF"):
        load_image(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")


def test_format_outside_the_allowed_list_is_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="TGA")
    with pytest.raises(Parts2WholeInputError, match="not an image"):
        load_image(buffer.getvalue())


# --- masks ----------------------------------------------------------------------------------------


def test_mask_uses_alpha_when_it_carries_the_strokes():
    brush_layer = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    brush_layer.paste((255, 255, 255, 255), (0, 0, 10, 20))
    mask = load_mask(brush_layer).mask
    assert mask.mode == "L"
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((15, 2)) == 0


def test_mask_uses_luminance_when_opaque():
    mask = load_mask(np.dstack([np.full((12, 12), 255, np.uint8)] * 3)).mask
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 255


def test_mask_of_same_shape_but_other_size_is_resized_with_a_note():
    small = Image.new("L", (10, 20), 0)
    small.paste(255, (0, 0, 5, 20))
    loaded = load_mask(small, expected_size=(40, 80))
    assert loaded.mask.size == (40, 80)
    assert loaded.note and "resized" in loaded.note
    assert set(np.unique(np.asarray(loaded.mask))) == {0, 255}  # nearest: still hard-edged


def test_mask_of_matching_size_has_no_note():
    assert load_mask(Image.new("L", (10, 20)), expected_size=(10, 20)).note is None


def test_mask_of_other_shape_is_refused():
    with pytest.raises(Parts2WholeInputError, match="different shape"):
        load_mask(Image.new("L", (10, 20)), expected_size=(20, 20))


def test_empty_mask_helpers():
    empty = Image.new("L", (10, 10), 0)
    faint = Image.new("L", (10, 10), 100)  # below threshold: still empty
    half = Image.new("L", (10, 10), 0)
    half.paste(255, (0, 0, 5, 10))
    assert is_empty_mask(empty) and is_empty_mask(faint)
    assert not is_empty_mask(half)
    assert is_empty_mask(half, min_pixels=51)
    assert mask_coverage(half) == pytest.approx(0.5)
    assert np.asarray(binarize_mask(Image.new("L", (4, 4), 200))).max() == 255
    assert np.asarray(binarize_mask(faint)).max() == 0


# --- properties -----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(8, 40), st.integers(8, 40), st.just(3))))
def test_any_rgb_array_survives_a_png_round_trip_unchanged(array):
    loaded = load_image(_png_bytes(Image.fromarray(array)))
    assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), array)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100_000), st.integers(1, 100_000))
def test_size_check_accepts_exactly_the_documented_range(width, height):
    acceptable = (
        width * height <= MAX_IMAGE_PIXELS
        and min(width, height) >= MIN_IMAGE_SIDE
        and max(width, height) <= images.MAX_ASPECT_RATIO * min(width, height)
    )
    if acceptable:
        images.check_image_size((width, height))
    else:
        with pytest.raises(Parts2WholeInputError):
            images.check_image_size((width, height))
