"""The six part labels of Parts2Whole, their UI names, aliases and limits.

The labels are fed verbatim to the text encoder (the reference UNet is conditioned on the text of its
label), so they must stay byte-for-byte the official strings.
"""

from __future__ import annotations

from .errors import Parts2WholeInputError

FACE = "face"
HAIR = "hair or headwear"
UPPER = "upper body clothes"
LOWER = "lower body clothes"
WHOLE = "whole body clothes"
SHOES = "shoes"

#: The official part labels, in the order the UI and CLI present them.
PART_LABELS: tuple[str, ...] = (FACE, HAIR, UPPER, LOWER, WHOLE, SHOES)

#: The label each UI slot feeds (slot titles are what a designer reads).
UI_SLOT_NAMES: dict[str, str] = {
    FACE: "Face",
    HAIR: "Hair or headwear",
    UPPER: "Upper-body clothes",
    LOWER: "Lower-body clothes",
    WHOLE: "Whole-body clothes",
    SHOES: "Shoes",
}

#: Short names people type. Keys are compared after `_normalise`.
LABEL_ALIASES: dict[str, str] = {
    "hair": HAIR,
    "headwear": HAIR,
    "hat": HAIR,
    "top": UPPER,
    "upper": UPPER,
    "upper body": UPPER,
    "shirt": UPPER,
    "bottom": LOWER,
    "lower": LOWER,
    "lower body": LOWER,
    "pants": LOWER,
    "dress": WHOLE,
    "whole body": WHOLE,
    "whole": WHOLE,
    "shoe": SHOES,
}

#: The released checkpoint's decoupled cross-attention has room for exactly six image tokens, one per
#: part, so a call takes at most this many references.
MAX_REFERENCES = 6


def _normalise(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").lower().split())


def canonical_label(label: str) -> str:
    """Map an official label or an alias ("top", "upper_body_clothes", "Hair") to the official text."""
    if not isinstance(label, str):
        raise Parts2WholeInputError(f"A part label must be text, got {type(label).__name__}.")
    key = _normalise(label)
    if key in PART_LABELS:
        return key
    if key in LABEL_ALIASES:
        return LABEL_ALIASES[key]
    known = ", ".join(repr(p) for p in PART_LABELS)
    raise Parts2WholeInputError(f"Unknown part label {label!r}. Use one of {known} (or hair, top, bottom, dress, shoes).")
