"""Masks and images as people hand them in: the default mask, a mask fitted to its image, the preview
that fades what a mask ignores, the share it keeps, and images turned upright in a mode the model reads."""

from __future__ import annotations

from PIL import ExifTags, Image, ImageOps

from preprocess.images import mask_coverage, normalise_mode, to_mask  # noqa: F401 - mask_coverage re-exported

#: How far ignored pixels are faded towards white in mask previews (0 = not at all, 1 = white).
MASK_PREVIEW_FADE = 0.78
MASK_PREVIEW_BACKDROP = (236, 236, 236)
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def default_mask(image: Image.Image) -> Image.Image:
    """The mask used when the user gives none: the image's alpha channel, else the whole image."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return Image.new("L", image.size, 255)


def fit_mask(mask: Image.Image, image: Image.Image) -> Image.Image:
    """A mask as 8-bit greyscale at the image's size (white = keep); RGBA masks use their alpha if it varies."""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        grey = alpha if alpha.getextrema() != (255, 255) else mask.convert("L")
    elif mask.mode in _HIGH_BIT_MODES:
        grey = to_mask(mask)  # scaled to 8 bits (a plain convert would clip every value above 255 to white)
    else:
        grey = mask.convert("L")
    if grey.size != image.size:
        grey = grey.resize(image.size, Image.Resampling.NEAREST)
    return grey


def overlay_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The image with what the mask ignores faded out, so people see exactly which pixels are used."""
    rgba = image.convert("RGBA")
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, MASK_PREVIEW_BACKDROP + (255,)), rgba).convert("RGB")
    mask = fit_mask(mask if mask is not None else default_mask(image), image)
    faded = Image.blend(rgb, Image.new("RGB", rgb.size, (255, 255, 255)), MASK_PREVIEW_FADE)
    return Image.composite(rgb, faded, mask)


def upright(image):
    """The image turned as its EXIF orientation says, when it says so; anything else comes back as it is.

    The one EXIF rotation of the studio path: `preprocess.images.load_image` rotates files and drops the
    tag, so what it loaded passes here untouched (no copy); images from other code are turned here."""
    if not isinstance(image, Image.Image) or image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def normalise_image(image: Image.Image) -> Image.Image:
    """Apply EXIF rotation and keep transparency (RGBA) so the alpha can serve as the default mask; other
    modes become RGB the way file loading does it (16-bit and float greys are scaled, not clipped)."""
    return rgb_or_rgba(upright(image))


def rgb_or_rgba(image: Image.Image) -> Image.Image:
    """RGB or RGBA (transparency kept for the default mask), converted the way file loading does it."""
    return image if image.mode in ("RGB", "RGBA") else normalise_mode(image)
