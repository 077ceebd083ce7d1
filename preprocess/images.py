"""Safe image and mask loading shared by every preprocessing step, the UI and the CLI.

Why a module of its own: user uploads arrive as file paths (Gradio), bytes (API), file objects,
numpy arrays (Gradio ``type="numpy"``) or PIL images, in any mode and any orientation. Every model
in this project wants the same thing: an upright 8-bit RGB (or RGBA when there is real
transparency) image of sane size, or a clear, fixable error.

Rules (all limits are module constants so the UI can quote them):

* The pixel count is checked from the file header, BEFORE the pixels are decoded, against
  :data:`MAX_IMAGE_PIXELS` (40 megapixels); a decompression bomb never allocates its pixels.
* Each side must be at least :data:`MIN_IMAGE_SIDE` pixels and the long side at most
  :data:`MAX_ASPECT_RATIO` times the short side (a 1x4000 strip is not a photo of a person).
* Files larger than :data:`MAX_FILE_BYTES` are refused before they are read.
* Only raster formats in :data:`ALLOWED_FORMATS` are decoded; SVG and PDF get a message that says
  to export a PNG/JPEG; zero-byte, truncated and non-image files get a clear message too. All of
  these raise :class:`~parts2whole.core.errors.Parts2WholeInputError`.
* EXIF orientation is applied (a phone photo taken upright is upright).
* Animated images (GIF, APNG, WebP) use their first frame.
* Modes are normalised: P, PA, L, LA, 1, CMYK, YCbCr, I;16, I, F, RGBa ... become ``RGB``, or
  ``RGBA`` when the image has an alpha channel (or a transparent palette entry) that is not fully
  opaque. High-bit-depth greys are scaled to 8 bits (see :func:`_to_uint8_grey`).

Masks (:func:`load_mask`, :func:`to_mask`) are single-channel ``L`` images where 255 means
"keep". An RGBA/LA mask whose alpha is not fully opaque uses its alpha (what a brush layer of a
paint tool holds); otherwise the luminance is the mask. A mask whose size differs from its image is
resized (nearest neighbour, so it stays hard-edged) when the aspect ratios agree within
:data:`MASK_ASPECT_TOLERANCE` - the usual case is a mask painted on a downscaled preview - and the
result says so in ``note``; with a different aspect ratio it cannot be aligned and is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from parts2whole.core.errors import Parts2WholeInputError
# The pixel limit and the mask shape tolerance are the validation layer's (defined once, quoted here):
# MAX_IMAGE_PIXELS is the largest accepted image in pixels (width * height); above it the pixels are
# never decoded. MASK_ASPECT_TOLERANCE is the relative aspect-ratio difference under which a mask of
# another size is resized to its image.
from parts2whole.core.limits import MASK_ASPECT_TOLERANCE, MAX_IMAGE_PIXELS

#: Smallest accepted side, in pixels. Models downscale to 224..1024; below this nothing is left.
MIN_IMAGE_SIDE = 8
#: Largest accepted ratio of long side to short side.
MAX_ASPECT_RATIO = 16.0
#: Largest accepted encoded file, in bytes (a 40 MP PNG is well under this).
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Raster formats PIL may decode (PIL format ids).
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
#: Mask pixels above this (0..255) count as "inside".
MASK_THRESHOLD = 127

#: What the loaders accept.
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray, Image.Image]

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: What PIL's decoders raise on damaged files (a broken TIFF directory raises TypeError or KeyError, ...).
_DAMAGED_FILE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, KeyError, IndexError, struct.error,
                        ZeroDivisionError, OverflowError)
_HOW_TO_FIX_FORMAT = "Save it as PNG or JPEG and upload that."


def load_image(source: ImageSource, *, what: str = "image") -> Image.Image:
    """Load ``source`` as an upright ``RGB`` image, or ``RGBA`` when it has real transparency.

    ``what`` names the input in error messages ("face reference", "pose map").
    Raises :class:`Parts2WholeInputError` for anything a user must fix.
    """
    image = _open_any(source, what)
    try:
        return normalise_mode(image)
    except _DAMAGED_FILE_ERRORS as error:
        raise Parts2WholeInputError(
            f"The {what} uses a pixel format this app cannot convert ({image.mode}: {error}). {_HOW_TO_FIX_FORMAT}"
        ) from None


def load_rgb(source: ImageSource, *, what: str = "image", background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Load ``source`` as ``RGB``; transparent pixels are composited over ``background``."""
    image = load_image(source, what=what)
    return flatten_alpha(image, background)


def flatten_alpha(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite an ``RGBA`` image over a solid colour; other images are returned as ``RGB``."""
    if image.mode == "RGB":
        return image
    if image.mode != "RGBA":
        return image.convert("RGB")
    canvas = Image.new("RGB", image.size, background)
    canvas.paste(image, mask=image.getchannel("A"))
    return canvas


def normalise_mode(image: Image.Image) -> Image.Image:
    """Return ``image`` as ``RGB``, or ``RGBA`` when some pixel is not fully opaque."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8_grey(image)).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha_min, _ = rgba.getchannel("A").getextrema()
        return rgba if alpha_min < 255 else rgba.convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _to_uint8_grey(image: Image.Image) -> np.ndarray:
    """Scale a 16/32-bit integer or float grey image to 0..255.

    Integers above 255 are taken as 16-bit (divided by 257); larger ranges are scaled by their max.
    Floats up to 1.0 are taken as 0..1, others are clipped to 0..255.
    """
    values = np.asarray(image).astype(np.float64)
    if values.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    peak = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode == "F":
        scaled = values * 255.0 if peak <= 1.0 else values
    elif peak <= 255:
        scaled = values
    elif peak <= 65535:
        scaled = values / 257.0
    else:
        scaled = values * (255.0 / peak)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# --- opening -------------------------------------------------------------------------------------


def _open_any(source: ImageSource, what: str) -> Image.Image:
    if isinstance(source, Image.Image):
        check_image_size(source.size, what)
        image = _first_frame(source)
        return ImageOps.exif_transpose(image)
    if isinstance(source, np.ndarray):
        return _from_array(source, what)
    data = _read_bytes(source, what)
    return _decode(data, what)


def _read_bytes(source: ImageSource, what: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise Parts2WholeInputError(f"The {what} file {path!r} does not exist (or is a folder). Check the path.")
        file_size = os.path.getsize(path)
        if file_size > MAX_FILE_BYTES:
            raise Parts2WholeInputError(
                f"The {what} file is {file_size / 2**20:.0f} MiB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB. "
                "Save a smaller PNG or JPEG."
            )
        with open(path, "rb") as handle:
            data = handle.read()
    elif hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if isinstance(data, str):
            raise Parts2WholeInputError(f"The {what} was opened as text; open the file in binary mode ('rb').")
    else:
        raise Parts2WholeInputError(
            f"Cannot read the {what} from a {type(source).__name__}. "
            "Give a file path, bytes, a binary file object, a numpy array or a PIL image."
        )
    if len(data) == 0:
        raise Parts2WholeInputError(f"The {what} file is empty (0 bytes). Upload the image again.")
    if len(data) > MAX_FILE_BYTES:
        raise Parts2WholeInputError(
            f"The {what} file is over {MAX_FILE_BYTES / 2**20:.0f} MiB. Save a smaller PNG or JPEG."
        )
    return data


def _sniff_vector_format(data: bytes) -> str | None:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf"):
        return "PDF"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG"
    return None


def _decode(data: bytes, what: str) -> Image.Image:
    vector = _sniff_vector_format(data)
    if vector is not None:
        raise Parts2WholeInputError(
            f"The {what} is a {vector} document, not a raster image. Export it as PNG or JPEG and upload that."
        )
    try:
        image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        raise Parts2WholeInputError(
            f"The {what} is not an image this app can read (accepted: {', '.join(ALLOWED_FORMATS)}). {_HOW_TO_FIX_FORMAT}"
        ) from None
    except Image.DecompressionBombError:
        raise Parts2WholeInputError(_too_many_pixels_message(None, what)) from None
    except _DAMAGED_FILE_ERRORS as error:
        raise Parts2WholeInputError(f"The {what} file is damaged ({error}). {_HOW_TO_FIX_FORMAT}") from None

    check_image_size(image.size, what)  # header only: no pixel has been decoded yet
    try:
        image = _first_frame(image)
        image.load()
    except Image.DecompressionBombError:
        raise Parts2WholeInputError(_too_many_pixels_message(image.size, what)) from None
    except _DAMAGED_FILE_ERRORS as error:
        raise Parts2WholeInputError(
            f"The {what} file is damaged or cut short ({error}). {_HOW_TO_FIX_FORMAT}"
        ) from None
    try:
        return ImageOps.exif_transpose(image)
    except _DAMAGED_FILE_ERRORS:
        return image  # unreadable EXIF: keep the pixels as stored


def _first_frame(image: Image.Image) -> Image.Image:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return image


def _from_array(array: np.ndarray, what: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise Parts2WholeInputError(
            f"The {what} array has shape {array.shape}; expected (height, width), (height, width, 3) or (height, width, 4)."
        )
    check_image_size((array.shape[1], array.shape[0]), what)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise Parts2WholeInputError(f"The {what} array has dtype {array.dtype}; use uint8 (0..255) or float (0..1).")
        values = np.nan_to_num(array.astype(np.float64))
        if np.issubdtype(array.dtype, np.floating) and values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        elif values.max(initial=0.0) > 255:
            values = values / 257.0
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))  # mode follows the shape: L, RGB or RGBA


# --- limits --------------------------------------------------------------------------------------


def _too_many_pixels_message(size: tuple[int, int] | None, what: str) -> str:
    shown = f"{size[0]}x{size[1]} " if size else ""
    return (
        f"The {what} is too large ({shown}over {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels). "
        "Downscale it (a long side of 2048 px is plenty) and upload again."
    )


def check_image_size(size: tuple[int, int], what: str = "image") -> None:
    """Raise :class:`Parts2WholeInputError` if ``(width, height)`` breaks the size limits above."""
    width, height = int(size[0]), int(size[1])
    if width * height > MAX_IMAGE_PIXELS:
        raise Parts2WholeInputError(_too_many_pixels_message((width, height), what))
    if min(width, height) < MIN_IMAGE_SIDE:
        raise Parts2WholeInputError(
            f"The {what} is {width}x{height} px; each side must be at least {MIN_IMAGE_SIDE} px. Upload a larger image."
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise Parts2WholeInputError(
            f"The {what} is {width}x{height} px, more than {MAX_ASPECT_RATIO:g} times longer than wide. "
            "Crop it to the part you want to use."
        )


# --- masks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedMask:
    """A mask in mode ``L`` (255 = keep) and, when it had to be resized, a note saying so."""

    mask: Image.Image
    note: str | None = None


def to_mask(image: Image.Image) -> Image.Image:
    """Convert any-mode image to an ``L`` mask: alpha when it carries information, else luminance."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8_grey(image))
    if image.mode == "L":
        return image.copy()
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            return alpha
    return image.convert("RGB").convert("L")


def load_mask(source: ImageSource, expected_size: tuple[int, int] | None = None, *, what: str = "mask") -> LoadedMask:
    """Load a mask as ``L``; with ``expected_size`` (width, height) make it that size or refuse.

    A different size with the same aspect ratio (within :data:`MASK_ASPECT_TOLERANCE`) is resized
    with nearest neighbour and ``note`` says so; a different aspect ratio raises.
    """
    raw = _open_any(source, what)
    try:
        mask = to_mask(raw)
    except _DAMAGED_FILE_ERRORS as error:
        raise Parts2WholeInputError(
            f"The {what} uses a pixel format this app cannot convert ({raw.mode}: {error}). {_HOW_TO_FIX_FORMAT}"
        ) from None
    if expected_size is None or mask.size == tuple(expected_size):
        return LoadedMask(mask)
    width, height = mask.size
    target_width, target_height = int(expected_size[0]), int(expected_size[1])
    ratio, target_ratio = width / height, target_width / target_height
    if abs(ratio - target_ratio) > MASK_ASPECT_TOLERANCE * target_ratio:
        raise Parts2WholeInputError(
            f"The {what} is {width}x{height} px but its image is {target_width}x{target_height} px, "
            "a different shape, so they cannot be lined up. Draw the mask on the same image."
        )
    resized = mask.resize((target_width, target_height), Image.Resampling.NEAREST)
    note = f"The {what} was {width}x{height} px and was resized to the image's {target_width}x{target_height} px."
    return LoadedMask(resized, note)


def binarize_mask(mask: Image.Image, threshold: int = MASK_THRESHOLD) -> Image.Image:
    """Return an ``L`` mask holding only 0 and 255 (pixels above ``threshold`` become 255)."""
    values = np.asarray(to_mask(mask))
    return Image.fromarray(np.where(values > threshold, 255, 0).astype(np.uint8))


def mask_coverage(mask: Image.Image, threshold: int = MASK_THRESHOLD) -> float:
    """Fraction (0..1) of pixels inside the mask."""
    values = np.asarray(to_mask(mask))
    return float((values > threshold).mean()) if values.size else 0.0


def is_empty_mask(mask: Image.Image, threshold: int = MASK_THRESHOLD, min_pixels: int = 1) -> bool:
    """True when fewer than ``min_pixels`` pixels are inside the mask (nothing was selected)."""
    values = np.asarray(to_mask(mask))
    return int((values > threshold).sum()) < min_pixels


def pixel_hash(image: Image.Image) -> str:
    """Content key of an image (mode, size and pixels), for caches keyed by what the image shows."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
