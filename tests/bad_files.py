"""A set of bad and of valid-but-odd image files, written into a folder, for the robustness tests.

Bad files must end in a clear `Parts2WholeInputError` message everywhere (API, CLI, served UI); odd
files (16-bit, CMYK, palette with transparency, grayscale, EXIF-rotated, animated) must simply work.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_header_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims width x height pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def _person_like(size=(96, 128)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def bad_file_bytes() -> dict[str, bytes]:
    """File name -> content, each one a file the app must refuse with a clear message."""
    good_png = _png_bytes(_person_like())
    return {
        "zero_byte.png": b"",
        "truncated.png": good_png[: len(good_png) // 2],
        "corrupt.png": good_png[:16] + b"\x00garbage" * 40,
        "not_an_image.png": b"hello, I am a text file\n" * 20,
        "notes.txt": b"just some text\n",
        "drawing.svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                       b'<rect width="64" height="64" fill="red"/></svg>\n',
        "document.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "bomb_header.png": huge_header_png(),
        "one_pixel.png": _png_bytes(Image.new("RGB", (1, 1), (200, 100, 50))),
        "strip.png": _png_bytes(Image.new("RGB", (2000, 20), (200, 100, 50))),
    }


def odd_file_bytes() -> dict[str, bytes]:
    """File name -> content, each one unusual but valid: it must load and generate."""
    base = _person_like()
    files = {}
    grey16 = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257)  # mode I;16
    files["sixteen_bit.png"] = _png_bytes(grey16)
    buffer = io.BytesIO()
    base.convert("CMYK").save(buffer, format="JPEG", quality=90)
    files["cmyk.jpg"] = buffer.getvalue()
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    files["palette_transparent.png"] = _png_bytes(palette, transparency=0)
    files["grayscale.png"] = _png_bytes(base.convert("L"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buffer = io.BytesIO()
    base.save(buffer, format="JPEG", exif=exif.tobytes())
    files["exif_rotated.jpg"] = buffer.getvalue()
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    files["animated.gif"] = buffer.getvalue()
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], duration=100)
    files["animated.webp"] = buffer.getvalue()
    files["rgba_alpha.png"] = _png_bytes(base.convert("RGBA"))
    return files


def write_files(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    return paths
