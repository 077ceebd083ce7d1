"""The dataset's index, test.jsonl: reading it, and its lines as `Sample`s (with what their caption and id
say, parts2whole.examples.outfit)."""

from __future__ import annotations

import dataclasses
import functools
import json

from ..core.dataset_layout import PART_FOLDERS
from ..core.labels import PART_LABELS, canonical_label
from .outfit import Outfit, describe_id, describe_outfit
from .source import ExampleFetchError

TEST_INDEX = "test.jsonl"
TARGET_FOLDER = "images"
DENSEPOSE_KEY = "densepose"
#: Notes kept about skipped index lines (the rest are counted in one more note).
MAX_INDEX_NOTES = 5



@dataclasses.dataclass(frozen=True)
class Sample:
    """One line of test.jsonl, with what the selection looks at."""

    target_id: str
    reference_id: str
    target: str  # path of the real target photo, e.g. images/<id>.jpg
    caption: str
    parts: dict[str, str]  # official label -> reference photo path
    masks: dict[str, str]  # official label -> soft mask path
    densepose: str | None  # path of the target's DensePose map

    @functools.cached_property
    def outfit(self) -> Outfit:
        """The outfit the caption describes (the id's shop category when it names no garment)."""
        return describe_outfit(self.caption, describe_id(self.target_id)["category"])

    @functools.cached_property
    def _described(self) -> dict[str, str]:
        outfit = self.outfit
        return {**describe_id(self.target_id, self.caption), "outfit": outfit.kind, "piece": outfit.piece,
                "bottom": outfit.bottom, "outfit_text": outfit.text, "headwear": "yes" if outfit.headwear else "no"}

    @property
    def attributes(self) -> dict[str, str]:
        """What the caption and the id say: gender (man/woman), category, person, view (the id; the caption's
        pronouns when the id has no gender), outfit (one-piece / top+bottom / unknown), piece (dress, jumpsuit,
        romper, playsuit, overalls or ""), bottom (trousers,
        shorts, skirt or ""), headwear (yes/no, the caption). What is visible comes from the masks
        (parts2whole.examples.checks), never from the labels: every line lists all six."""
        return dict(self._described)

    @property
    def usable_labels(self) -> list[str]:
        """Part labels with both a photo and a mask, in the UI's order."""
        return [label for label in PART_LABELS if label in self.parts and label in self.masks]


def _canonical_part(key: str) -> str | None:
    folders = {folder: label for label, folder in PART_FOLDERS.items()}
    if key in folders:
        return folders[key]
    try:
        return canonical_label(key)
    except Exception:  # noqa: BLE001 - an unknown key is skipped, not fatal
        return None


def _sample(row: dict) -> Sample:
    parts = {_canonical_part(k): v for k, v in (row.get("appearance") or {}).items()}
    masks = {_canonical_part(k): v for k, v in (row.get("mask") or {}).items()}
    structure = row.get("structure") or {}
    return Sample(
        target_id=str(row["target_id"]), reference_id=str(row.get("reference_id", "")),
        target=str(row["target"]), caption=str(row.get("caption", "")).strip(),
        parts={k: str(v) for k, v in parts.items() if k}, masks={k: str(v) for k, v in masks.items() if k},
        densepose=str(structure[DENSEPOSE_KEY]) if structure.get(DENSEPOSE_KEY) else None)


def parse_index(text: str) -> tuple[list[Sample], list[str]]:
    """Samples of a jsonl index (sorted by target id, then reference id) and notes about skipped lines."""
    samples, notes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            samples.append(_sample(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            notes.append(f"{TEST_INDEX} line {number} skipped ({type(error).__name__}: {error})")
    samples.sort(key=lambda s: (s.target_id, s.reference_id))
    return samples, notes


def read_index(fs, root: str) -> bytes:
    """The bytes of test.jsonl under `root` on the fsspec file system `fs` (the whole file, a few MB)."""
    try:
        return fs.cat_file(f"{root}/{TEST_INDEX}")
    except FileNotFoundError:
        raise ExampleFetchError(f"{TEST_INDEX} is not in the dataset at {root}") from None
    except Exception as error:  # noqa: BLE001 - network and permission errors, in one line
        raise ExampleFetchError(f"could not read {TEST_INDEX} ({type(error).__name__}: {error})") from None


def index_samples(index_bytes: bytes) -> tuple[list[Sample], list[str]]:
    """The samples of the index and a few notes about skipped lines; ExampleFetchError when none is usable."""
    samples, skipped = parse_index(index_bytes.decode("utf-8", errors="replace"))
    notes = skipped[:MAX_INDEX_NOTES]
    if len(skipped) > MAX_INDEX_NOTES:
        notes.append(f"... and {len(skipped) - MAX_INDEX_NOTES} more lines skipped")
    if not samples:
        raise ExampleFetchError(f"{TEST_INDEX} has no usable sample")
    return samples, notes
