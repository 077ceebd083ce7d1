"""Property-based: generated bad FILES (random bytes, damaged PNG/JPEG/GIF/WebP/TIFF/BMP, lying headers) through
`load_image` and `load_mask` end in a decoded, upright, sane image or in `Parts2WholeInputError` with a
message, never in another exception, and quickly (headers are checked before pixels are decoded)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.model.validation import MAX_IMAGE_PIXELS
from preprocess.images import MIN_IMAGE_SIDE, load_image, load_mask

EXAMPLES = 300
#: Each file is judged within this many seconds.
SECONDS_PER_FILE = 2.0


def _encoded(format_: str, mode: str = "RGB", size=(24, 32), **kwargs) -> bytes:
    rng = np.random.default_rng(len(format_) + len(mode))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format_, **kwargs)
    return buffer.getvalue()


VALID_FILES = {
    "png": _encoded("PNG"), "png-palette": _encoded("PNG", "P"), "png-grey": _encoded("PNG", "L"),
    "png-rgba": _encoded("PNG", "RGBA"), "jpeg": _encoded("JPEG"), "jpeg-cmyk": _encoded("JPEG", "CMYK"),
    "gif": _encoded("GIF", "P"), "webp": _encoded("WEBP"), "tiff": _encoded("TIFF"), "bmp": _encoded("BMP"),
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int, depth: int, colour: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 32))
            + _chunk(b"IEND", b""))


def _flip(data: bytes, positions: list[int], values: list[int]) -> bytes:
    mutable = bytearray(data)
    for position, value in zip(positions, values):
        mutable[position % len(mutable)] = value
    return bytes(mutable)


valid_file = st.sampled_from(sorted(VALID_FILES)).map(VALID_FILES.__getitem__)
damaged_files = st.one_of(
    st.binary(max_size=2048),  # noise
    st.builds(lambda data, cut: data[:cut], valid_file, st.integers(0, 400)),  # cut short
    st.builds(_flip, valid_file, st.lists(st.integers(0, 10_000), min_size=1, max_size=8),
              st.lists(st.integers(0, 255), min_size=8, max_size=8)),  # bytes changed
    st.builds(lambda data, junk: data + junk, valid_file, st.binary(min_size=1, max_size=64)),  # trailing junk
    st.builds(_png_claiming, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),  # lying headers
              st.sampled_from([1, 2, 4, 8, 16, 3, 0]), st.sampled_from([0, 2, 3, 4, 6, 1, 7])),
    st.builds(lambda head, tail: head + tail, st.sampled_from([b"%PDF-1.7\n", b"<svg ", b"<?xml version='1.0'?><svg",
                                                             b"GIF89a", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP",
                                                             b"II*\x00", b"BM", b"\x89PNG\r\n\x1a\n"]),
              st.binary(max_size=256)),  # a real signature, then anything
)


def _judge(load) -> Image.Image | None:
    started = time.perf_counter()
    try:
        result = load()
    except Parts2WholeInputError as error:
        message = str(error)
        assert len(message) > 20 and "Traceback" not in message, message
        result = None
    assert time.perf_counter() - started < SECONDS_PER_FILE
    return result


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(damaged_files)
def test_damaged_files_load_sanely_or_get_a_clear_message(data):
    image = _judge(lambda: load_image(data, what="face image"))
    if image is not None:
        assert image.mode in ("RGB", "RGBA")
        assert min(image.size) >= MIN_IMAGE_SIDE and image.width * image.height <= MAX_IMAGE_PIXELS
        image.tobytes()  # the pixels are really there
    mask = _judge(lambda: load_mask(data, what="face mask"))
    if mask is not None:
        assert mask.mask.mode == "L"


@pytest.mark.parametrize("name", sorted(VALID_FILES))
def test_each_seed_file_is_valid(name):
    assert load_image(VALID_FILES[name]).size == (24, 32)


def test_a_tiff_whose_second_page_is_broken_gets_a_message():
    """Found by the property test above: PIL raised TypeError ("Missing dimensions") while counting pages."""
    data = VALID_FILES["tiff"]
    first_ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first_ifd:first_ifd + 2])[0]
    next_pointer = first_ifd + 2 + 12 * entries
    broken_ifd = len(data)
    broken = bytearray(data[:next_pointer] + struct.pack("<I", broken_ifd) + data[next_pointer + 4:])
    broken += struct.pack("<H", 1) + struct.pack("<HHII", 0x0103, 3, 1, 1) + struct.pack("<I", 0)  # no size tags
    try:
        image = load_image(bytes(broken))
    except Parts2WholeInputError as error:
        assert "damaged" in str(error)
    else:
        assert image.size == (24, 32)
