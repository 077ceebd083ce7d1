"""Turning PIL inputs into the tensors the models read, exactly as the official inference does.

The steps are written out with PIL and numpy on purpose: transformers 5's `CLIPImageProcessor` resizes
differently from the one the checkpoint was used with (up to 0.015 apart on the golden fixtures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

#: PIL's default `Image.resize` filter, what the official code uses for references and masks.
REFERENCE_RESAMPLE = Image.Resampling.BICUBIC
#: The structure map is resized with LANCZOS in the official code.
STRUCTURE_RESAMPLE = Image.Resampling.LANCZOS


def reference_pixels_and_mask(image: Image.Image, mask: Image.Image | None, height: int, width: int):
    """VAE input (1, 3, H, W) in [-1, 1] and subject mask (1, 1, H, W) in [0, 1] of one reference.

    The image is resized as RGBA (PIL resizes in premultiplied-alpha space) and composited on white;
    without a mask the resized alpha is the subject mask. Masks stay fractional (no threshold).
    """
    rgba = np.asarray(image.convert("RGBA").resize((width, height), REFERENCE_RESAMPLE), dtype=np.float32) / 255.0
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    composited = rgb * alpha + (1.0 - alpha)
    pixels = torch.from_numpy(composited * 2.0 - 1.0).permute(2, 0, 1).unsqueeze(0)
    if mask is None:
        mask_values = alpha[..., 0]
    else:
        mask_values = np.asarray(mask.convert("L").resize((width, height), REFERENCE_RESAMPLE), dtype=np.float32) / 255.0
    return pixels.contiguous(), torch.from_numpy(np.ascontiguousarray(mask_values))[None, None]


@dataclass(frozen=True)
class ClipImageSettings:
    """What the checkpoint's `feature_extractor/preprocessor_config.json` says about CLIP's input."""

    shortest_edge: int
    crop_height: int
    crop_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255

    @classmethod
    def from_config(cls, config: dict) -> "ClipImageSettings":
        size = config["size"]
        shortest = size["shortest_edge"] if isinstance(size, dict) else int(size)
        crop = config.get("crop_size", shortest)
        crop_h, crop_w = (crop["height"], crop["width"]) if isinstance(crop, dict) else (int(crop), int(crop))
        return cls(shortest, crop_h, crop_w, tuple(config["image_mean"]), tuple(config["image_std"]),
                   float(config.get("rescale_factor", 1 / 255)))


def clip_pixels(image: Image.Image, settings: ClipImageSettings) -> torch.Tensor:
    """CLIP vision input (1, 3, crop_h, crop_w) of the ORIGINAL reference (alpha dropped, not composited)."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(settings.shortest_edge * long / short)
    new_size = (settings.shortest_edge, new_long) if width <= height else (new_long, settings.shortest_edge)
    resized = rgb.resize(new_size, Image.Resampling.BICUBIC)
    top = (resized.height - settings.crop_height) // 2
    left = (resized.width - settings.crop_width) // 2
    array = np.asarray(resized, dtype=np.float32)
    # Crop like numpy slicing of a padded array: negative offsets (crop larger than image) pad with zeros.
    crop = np.zeros((settings.crop_height, settings.crop_width, 3), dtype=np.float32)
    src_top, src_left = max(top, 0), max(left, 0)
    src = array[src_top:src_top + settings.crop_height, src_left:src_left + settings.crop_width]
    crop[src_top - top:src_top - top + src.shape[0], src_left - left:src_left - left + src.shape[1]] = src
    normalised = (crop * settings.rescale_factor - np.asarray(settings.mean, np.float32)) / np.asarray(settings.std, np.float32)
    return torch.from_numpy(normalised.astype(np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def structure_pixels(structure: Image.Image, height: int, width: int) -> torch.Tensor:
    """Pose-guider input (1, 3, H, W) in [0, 1]; any mode is converted to RGB first."""
    resized = structure.convert("RGB").resize((width, height), STRUCTURE_RESAMPLE)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(images: np.ndarray) -> list[Image.Image]:
    """(N, H, W, 3) floats in [0, 1] -> PIL images (rounded, as diffusers does)."""
    return [Image.fromarray((image * 255).round().astype(np.uint8)) for image in images]
