"""What a sample's caption and id say about the person: gender, shop category, person, view (from the id) and
the outfit (from the caption): one piece (a dress, a jumpsuit...) or a top with trousers, shorts or a skirt,
and headwear. The part labels of a line cannot say this: every line lists all six (see
parts2whole.core.dataset_layout.EVERY_LINE_LISTS_ALL_PARTS).

Captions are written in DeepFashion-MultiModal's style [card]: "This person is wearing a short-sleeve shirt
with graphic patterns. ... The pants this person wears is of short length. ... There is a hat in his head."
Garments are found as whole words; a bottom's length ("short", "three-point": above the knee) makes trousers
shorts. The id's shop category (Dresses, Rompers_Jumpsuits, Skirts, ...) decides when the caption names no
garment of that kind: a photo sold as a dress whose caption speaks only of "the lower clothing" is a dress.
"""

from __future__ import annotations

import dataclasses
import re

#: The id pattern of DeepFashion-MultiModal image names (parts2whole.core.dataset_layout.ID_EXAMPLE).
ID_PATTERN = re.compile(r"^(?P<gender>MEN|WOMEN)-(?P<category>[^-]+)-(?P<person>id_\d+)-(?P<outfit>\d+)"
                        r"_(?P<shot>\d+)_(?P<view>[a-z]+)$")

#: One-piece garments: the whole outfit is one garment (overalls may be worn over a top).
ONE_PIECES = {"dress": "dress", "dresses": "dress", "gown": "dress", "jumpsuit": "jumpsuit", "jumpsuits": "jumpsuit",
              "romper": "romper", "rompers": "romper", "playsuit": "playsuit", "overalls": "overalls",
              "overall": "overalls", "dungarees": "overalls"}
#: Tops, most specific first ("tank top" before "top", "t-shirt" before "shirt").
TOPS = ("tank top", "t-shirt", "tee", "polo", "blouse", "sweatshirt", "hoodie", "sweater", "cardigan", "jacket",
        "coat", "blazer", "vest", "shirt", "top", "upper clothing")
#: Bottoms: skirts and shorts by name; trousers by any of these names, unless their length is short.
SKIRTS = ("skirt", "skirts")
SHORTS = ("shorts",)
TROUSERS = ("trousers", "pants", "jeans", "leggings", "chinos", "joggers")
#: Words for any bottom: trousers (or shorts, by length) unless the shop category says a dress or a jumpsuit.
GENERIC_BOTTOMS = ("lower clothing", "lower clothes", "bottoms")
#: Lengths of a bottom in the captions that mean above the knee (DeepFashion-MultiModal's lower-clothing
#: lengths are three-point, medium short, three-quarter and long).
SHORT_LENGTHS = ("short length", "three-point", "medium short", "medium-short")
SLEEVES = ("sleeveless", "short-sleeve", "medium-sleeve", "long-sleeve")
HEADWEAR = ("hat", "cap", "beanie", "headwear", "headband", "hairband", "helmet", "beret", "turban")
MALE_WORDS = ("he", "his", "him", "man", "men", "gentleman", "guy", "male", "boy")
FEMALE_WORDS = ("she", "her", "woman", "women", "lady", "female", "girl")
#: Shop categories (from the id) that tell the outfit when the caption does not.
CATEGORY_OUTFITS = {"dresses": ("one-piece", "dress", ""), "rompers_jumpsuits": ("one-piece", "jumpsuit", ""),
                    "skirts": ("top+bottom", "", "skirt"), "shorts": ("top+bottom", "", "shorts"),
                    "pants": ("top+bottom", "", "trousers"), "leggings": ("top+bottom", "", "trousers")}


def _words(text: str, words) -> list[tuple[int, str]]:
    """(position, word) of each of `words` found as a whole word in `text` (lower case)."""
    found = []
    for word in words:
        for match in re.finditer(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text):
            found.append((match.start(), word))
    return sorted(found)


@dataclasses.dataclass(frozen=True)
class Outfit:
    """The outfit a caption describes. kind: "one-piece", "top+bottom" or "unknown"."""

    kind: str
    piece: str = ""  # dress, jumpsuit, romper, playsuit, overalls
    top: str = ""  # e.g. "short-sleeve shirt"
    bottom: str = ""  # trousers, shorts or skirt
    headwear: bool = False

    @property
    def text(self) -> str:
        """"dress", "T-shirt and overalls", "short-sleeve shirt and shorts", "top and skirt", or "outfit"."""
        top = self.top.replace("t-shirt", "T-shirt")
        if self.kind == "one-piece":
            return f"{top} and {self.piece}" if self.piece == "overalls" and top else self.piece
        if self.kind == "top+bottom":
            return f"{top or 'top'} and {self.bottom}"
        return "outfit"


def _bottom(text: str, names: tuple[str, ...] = TROUSERS) -> str:
    if _words(text, SKIRTS):
        return "skirt"
    if _words(text, SHORTS):
        return "shorts"
    sentences = [s for s in re.split(r"[.;!?]", text) if _words(s, names)]
    if not sentences:
        return ""
    return "shorts" if any(length in s for s in sentences for length in SHORT_LENGTHS) else "trousers"


def _top(text: str) -> str:
    for sentence in re.split(r"[.;!?]", text):
        found = _words(sentence, TOPS)
        if found:
            position, noun = found[0]
            sleeve = [s for p, s in _words(sentence[:position], SLEEVES) if position - p <= len(s) + 1]
            return f"{sleeve[0]} {noun}" if sleeve else noun
    return ""


def describe_outfit(caption: str, category: str = "") -> Outfit:
    """The outfit a DeepFashion-MultiModal caption describes; the shop `category` (from the id) when the
    caption names no garment."""
    text = " ".join(caption.lower().split())
    headwear = bool(_words(text, HEADWEAR))
    pieces = _words(text, ONE_PIECES)
    top, bottom = _top(text), _bottom(text)
    if pieces:
        piece = ONE_PIECES[pieces[0][1]]
        return Outfit("one-piece", piece, top if piece == "overalls" else "", headwear=headwear)
    kind, piece, category_bottom = CATEGORY_OUTFITS.get(category.lower(), ("unknown", "", ""))
    if kind == "one-piece" and not bottom:  # "the lower clothing is long" in a dress shop's photo: the dress
        return Outfit(kind, piece, headwear=headwear)
    bottom = bottom or _bottom(text, GENERIC_BOTTOMS) or category_bottom
    if bottom:
        return Outfit("top+bottom", top=top, bottom=bottom, headwear=headwear)
    return Outfit(kind, piece, headwear=headwear)


def describe_id(target_id: str, caption: str = "") -> dict[str, str]:
    """gender (man/woman/unknown), category, person (`id_<n>-<outfit>`) and view from an id; the caption's
    pronouns give the gender when the id does not."""
    match = ID_PATTERN.match(target_id)
    groups = match.groupdict() if match else {}
    gender = {"MEN": "man", "WOMEN": "woman"}.get(groups.get("gender", ""), "unknown")
    if gender == "unknown":
        text = caption.lower()
        male, female = len(_words(text, MALE_WORDS)), len(_words(text, FEMALE_WORDS))
        gender = "man" if male > female else "woman" if female > male else "unknown"
    return {"gender": gender, "category": groups.get("category", "unknown"),
            "person": f"{groups.get('person', target_id)}-{groups.get('outfit', '')}",
            "view": groups.get("view", "unknown")}
