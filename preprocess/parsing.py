"""Automatic part masks from a human parser (SegFormer-B2 fine-tuned on ATR clothes parsing).

Model: ``mattmdjaga/segformer_b2_clothes`` on the Hugging Face Hub, run through ``transformers``
(``SegformerForSemanticSegmentation`` + ``SegformerImageProcessor``), loaded lazily and once per
process. Its 18 classes (checked against the model's ``config.id2label``) are listed in
:data:`PARSER_CLASS_NAMES`. Classes are looked up BY NAME in the loaded model's ``id2label``, so a
re-trained parser with the same names in another order still works, and one missing a name needed
by the table is refused with :class:`~parts2whole.core.errors.CheckpointError`.

The part table (:data:`PART_TO_PARSER_CLASSES`) and its edge cases:

* ``face`` = Face + Sunglasses. Sunglasses sit on the face; leaving them out punches a hole where
  the eyes are, and the face reference of Parts2Whole is the whole face region.
* ``hair or headwear`` = Hat + Hair (the label covers both).
* ``upper body clothes`` = Upper-clothes + Scarf. A scarf is worn on the upper body and the parser
  splits it off the top it covers. Arms (skin) are not clothes and are left out.
* ``lower body clothes`` = Skirt + Pants + Belt. A belt is part of the lower garment's waist.
  Legs (skin) are left out.
* ``whole body clothes`` = Dress + Upper-clothes + Skirt + Pants + Belt + Scarf: every garment
  except shoes and headwear. The parser labels a jumpsuit or a two-piece outfit as Upper-clothes +
  Pants/Skirt, so a "whole body" reference must take all of them, not only Dress.
* ``shoes`` = Left-shoe + Right-shoe.
* Bag, Left/Right-arm, Left/Right-leg and Background never belong to a part.

A part is "found" when its cleaned mask covers at least :data:`MIN_FOUND_FRACTION` of the image,
and "unsure" when the parser's mean probability over the mask is below :data:`UNSURE_CONFIDENCE`
(the UI can then offer pose-based seed clicks, :func:`preprocess.pose.seed_points_for_part`).
When it is not found, :func:`auto_part_mask` does NOT raise: it returns a :class:`PartMask` with an
empty mask, ``found=False`` and a ``message`` the UI can show ("No face found in this image. Click
on the face to select it."), because the next step for the user is a click, not a retry.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from parts2whole.core.errors import CheckpointError
from parts2whole.core.labels import FACE, HAIR, LOWER, PART_LABELS, SHOES, UPPER, WHOLE, canonical_label

from .images import ImageSource, flatten_alpha, load_image, pixel_hash
from .masks import clean_mask, mask_to_image
from parts2whole.core.weights import weights_dir

if TYPE_CHECKING:
    import torch

#: Hub repository of the SegFormer-B2 clothes parser.
PARSER_REPO_ID = "mattmdjaga/segformer_b2_clothes"
#: Hub commit downloaded by default, so every install gets the same parser (``revision=`` overrides it).
PARSER_REVISION = "584abc1e1d260e23c0fc627c5217a09b2b461046"
#: Subfolder of ``weights/`` the parser is downloaded into.
PARSER_WEIGHTS_SUBFOLDER = "segformer_b2_clothes"
#: Config files the parser needs besides its weights (``model.safetensors``, else ``pytorch_model.bin``).
PARSER_CONFIG_FILES = ("config.json", "preprocessor_config.json")

#: The parser's classes in id order (the model's ``config.id2label``).
PARSER_CLASS_NAMES: tuple[str, ...] = (
    "Background", "Hat", "Hair", "Sunglasses", "Upper-clothes", "Skirt", "Pants", "Dress", "Belt",
    "Left-shoe", "Right-shoe", "Face", "Left-leg", "Right-leg", "Left-arm", "Right-arm", "Bag", "Scarf",
)

#: Parser classes that make up each Parts2Whole part label (edge cases in the module docstring).
PART_TO_PARSER_CLASSES: dict[str, tuple[str, ...]] = {
    FACE: ("Face", "Sunglasses"),
    HAIR: ("Hat", "Hair"),
    UPPER: ("Upper-clothes", "Scarf"),
    LOWER: ("Skirt", "Pants", "Belt"),
    WHOLE: ("Dress", "Upper-clothes", "Skirt", "Pants", "Belt", "Scarf"),
    SHOES: ("Left-shoe", "Right-shoe"),
}

#: A part covering less than this fraction of the image counts as not found.
MIN_FOUND_FRACTION = 0.001
#: Below this mean parser probability (0..1) over a found part's pixels, the part is "unsure".
UNSURE_CONFIDENCE = 0.6
#: Logits are upsampled to at most this long side; the label map is then scaled (nearest) to the
#: image. Keeps memory bounded (18 float maps at 40 MP would be ~3 GB) at no visible cost: the
#: parser's own output is 1/4 of its 512 px input.
PARSE_MAX_SIDE = 1024
#: How many parsed images are kept (keyed by pixel content) so six part masks cost one forward pass.
PARSE_CACHE_SIZE = 8


@dataclass(frozen=True)
class PartMask:
    """The automatic mask of one part: ``mask`` is ``L`` at the image size (255 = part).

    ``confidence`` is the parser's mean probability over the mask (0 when not found); ``unsure``
    flags a found part with low confidence; ``message`` is what the UI shows (None when all is well).
    """

    label: str
    mask: Image.Image
    found: bool
    coverage: float
    confidence: float = 0.0
    unsure: bool = False
    message: str | None = None


@dataclass(frozen=True, eq=False)
class ParsedImage:
    """Parser output at the image size: class ids and the probability of the chosen class (0..255)."""

    labels: np.ndarray  # (H, W) uint8
    confidence: np.ndarray  # (H, W) uint8, probability * 255


class HumanParser:
    """SegFormer clothes parser: image -> per-pixel class ids at the image's own size.

    ``model_path`` is a local folder in ``save_pretrained`` layout; :meth:`from_hub` fills one from
    the Hub. Thread-safe: the model is read-only in eval mode and results are cached per image.
    """

    def __init__(self, model_path: str | Path, *, device: str = "cpu") -> None:
        from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor  # heavy: imported on first use, keeps importing this package light

        from parts2whole.core.checkpoints import load_transformers_model  # heavy: imported on first use, keeps importing this package light

        self.device = device
        self.processor = SegformerImageProcessor.from_pretrained(str(model_path))
        # Not SegformerForSemanticSegmentation.from_pretrained: it patches torch's init functions for every
        # thread while it builds (see parts2whole.model.loading). Older parser repos ship only a pickle, read
        # with torch.load(weights_only=True).
        self.model = load_transformers_model(SegformerForSemanticSegmentation, Path(model_path), "human parser",
                                             allow_torch_file=True).to(device)
        self.class_ids = _class_ids_by_name(self.model.config.id2label)
        self._cache: OrderedDict[str, ParsedImage] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_hub(cls, repo_id: str = PARSER_REPO_ID, *, revision: str = PARSER_REVISION, device: str = "cpu") -> HumanParser:
        """Download (first use only) the parser into ``weights/`` and load it."""
        return cls(download_parser(repo_id, revision=revision), device=device)

    def parse(self, image: ImageSource) -> np.ndarray:
        """Class id of every pixel, shape (height, width), dtype uint8, at the image's size."""
        return self.parse_with_confidence(image).labels

    def parse_with_confidence(self, image: ImageSource) -> ParsedImage:
        """Class ids and their probabilities at the image's size (cached by pixel content)."""
        rgb = flatten_alpha(load_image(image, what="photo"))
        key = pixel_hash(rgb)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        parsed = self._predict(rgb)
        with self._lock:
            self._cache[key] = parsed
            while len(self._cache) > PARSE_CACHE_SIZE:
                self._cache.popitem(last=False)
        return parsed

    def _predict(self, rgb: Image.Image) -> ParsedImage:
        import torch  # heavy: imported on first use, keeps importing this package light

        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits
        return _parsed_at_size(logits, rgb.size)

    def part_mask_array(self, image: ImageSource, label: str) -> np.ndarray:
        """Boolean (H, W) mask of ``label`` (raw parser output, before clean-up)."""
        return labels_to_part_mask(self.parse(image), label, self.class_ids)


def _parsed_at_size(logits: torch.Tensor, size: tuple[int, int]) -> ParsedImage:
    """Upsample (1, C, h, w) logits towards ``size`` = (width, height), take the per-pixel argmax and
    its softmax probability, and bring both to ``size`` (nearest) when the cap made them smaller."""
    import torch  # heavy: imported on first use, keeps importing this package light
    import torch.nn.functional as functional  # heavy: imported on first use, keeps importing this package light

    width, height = size
    scale = min(1.0, PARSE_MAX_SIDE / max(width, height))
    work_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    upsampled = functional.interpolate(logits.float(), size=work_size, mode="bilinear", align_corners=False)
    probability, labels = torch.softmax(upsampled, dim=1).max(dim=1)
    labels = labels[0].to(dtype=torch.uint8).cpu().numpy()
    confidence = (probability[0] * 255).round().to(dtype=torch.uint8).cpu().numpy()
    if work_size != (height, width):
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
        confidence = np.asarray(Image.fromarray(confidence).resize((width, height), Image.Resampling.NEAREST))
    return ParsedImage(labels=labels, confidence=confidence)


def _labels_at_size(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Class id per pixel at ``size`` = (width, height)."""
    return _parsed_at_size(logits, size).labels


def _class_ids_by_name(id2label: dict) -> dict[str, int]:
    by_name = {str(name): int(index) for index, name in id2label.items()}
    needed = sorted({name for names in PART_TO_PARSER_CLASSES.values() for name in names})
    missing = [name for name in needed if name not in by_name]
    if missing:
        raise CheckpointError(
            f"The human parser has no class named {', '.join(missing)} (its classes: {', '.join(by_name)}). "
            f"Use {PARSER_REPO_ID} or a parser with the same class names."
        )
    return by_name


def labels_to_part_mask(label_map: np.ndarray, label: str, class_ids: dict[str, int] | None = None) -> np.ndarray:
    """Boolean mask of the pixels whose parser class belongs to part ``label`` (aliases accepted)."""
    part = canonical_label(label)
    ids = class_ids or {name: index for index, name in enumerate(PARSER_CLASS_NAMES)}
    wanted = [ids[name] for name in PART_TO_PARSER_CLASSES[part]]
    return np.isin(label_map, wanted)


def download_parser(repo_id: str = PARSER_REPO_ID, *, revision: str = PARSER_REVISION) -> Path:
    """Folder with the parser's config, preprocessor config and weights, downloaded on first use."""
    target = weights_dir() / PARSER_WEIGHTS_SUBFOLDER
    has_configs = all((target / name).is_file() for name in PARSER_CONFIG_FILES)
    if has_configs and any((target / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        return target
    from huggingface_hub import hf_hub_download  # heavy: imported on first use, keeps importing this package light

    try:
        for filename in PARSER_CONFIG_FILES:
            hf_hub_download(repo_id, filename, revision=revision, local_dir=target)
        try:
            hf_hub_download(repo_id, "model.safetensors", revision=revision, local_dir=target)
        except Exception:  # noqa: BLE001 - older repos only have the pickle, which transformers loads safely
            hf_hub_download(repo_id, "pytorch_model.bin", revision=revision, local_dir=target)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(
            f"Could not download the human parser {repo_id}@{revision} ({type(error).__name__}: {error}). "
            f"Download its config.json, preprocessor_config.json and model.safetensors into {target}."
        ) from error
    return target


_default_parser: HumanParser | None = None
_default_parser_lock = threading.Lock()


def get_parser() -> HumanParser:
    """The process-wide parser, created on first use (downloads on the very first run)."""
    global _default_parser
    with _default_parser_lock:
        if _default_parser is None:
            _default_parser = HumanParser.from_hub()
        return _default_parser


def not_found_message(label: str) -> str:
    """What the UI says when the parser finds no pixel of ``label``."""
    return f"No {canonical_label(label)} found in this image. Click on it to select it by hand."


def unsure_message(label: str) -> str:
    """What the UI says when the parser found ``label`` but is not confident about it."""
    return f"The {canonical_label(label)} mask may be wrong. Check it and click to fix it."


def auto_part_mask(image: ImageSource, label: str, parser: HumanParser | None = None) -> PartMask:
    """Automatic mask of part ``label`` in ``image``: speckles removed, pin holes filled.

    Never raises for a missing part: ``found`` is False, the mask is empty and ``message`` says
    what to do. Raises :class:`Parts2WholeInputError` for an unreadable image or unknown label.
    """
    part = canonical_label(label)
    parser = parser or get_parser()
    parsed = parser.parse_with_confidence(image)
    cleaned = clean_mask(labels_to_part_mask(parsed.labels, part, parser.class_ids))
    coverage = float(cleaned.mean()) if cleaned.size else 0.0
    if coverage < MIN_FOUND_FRACTION:
        empty = np.zeros_like(cleaned)
        return PartMask(label=part, mask=mask_to_image(empty), found=False, coverage=0.0, message=not_found_message(part))
    confidence = float(parsed.confidence[cleaned].mean()) / 255.0
    unsure = confidence < UNSURE_CONFIDENCE
    return PartMask(
        label=part,
        mask=mask_to_image(cleaned),
        found=True,
        coverage=coverage,
        confidence=confidence,
        unsure=unsure,
        message=unsure_message(part) if unsure else None,
    )


def auto_part_masks(image: ImageSource, labels: tuple[str, ...] = PART_LABELS, parser: HumanParser | None = None) -> dict[str, PartMask]:
    """:func:`auto_part_mask` for several labels with one parser pass."""
    parser = parser or get_parser()
    return {canonical_label(label): auto_part_mask(image, label, parser) for label in labels}
