"""Real examples and a DensePose pose gallery from the test split of the Parts2Whole dataset.

What it fetches: a fixed, deterministic selection of test samples of the Hub dataset
`huanngzh/DeepFashion-MultiModal-Parts2Whole` (pinned to DATASET_REVISION; `revision=` overrides): for each,
the reference part photos and their soft masks, the DensePose map of the target, the caption (the prompt)
and the real target photo (the ground truth, shown as "the real person", never as a result); plus the
DensePose maps of about 24 other test targets as a pose gallery.

Data flow (no UI code here: the app and the CLI read an `ExampleLibrary` / a `Manifest`):

    test.jsonl --(whole file, a few MB)--> samples --select_examples / pose_candidates--> wanted members
    <folder>.zip --(range reads: the zip's tail, its central directory, then each wanted member)--> bytes
    bytes --checked (CRC by zipfile, decoded by PIL)--> cache folder (files + manifest.json, written last)
    manifest.json --> ExampleLibrary (what the app shows; the cartoon examples when there is none)

Why range reads: the dataset's folders are single zip files of 1-12 GB. A zip's central directory (at its
end) lists every member's offset, so `zipfile` over a seekable file reads the directory and then only the
wanted members. `huggingface_hub.HfFileSystem` files are seekable (HTTP range requests); any fsspec file
system works the same way (the tests pass a local one that counts the bytes read). Every byte read is
counted and the totals, per archive and against the archive sizes, go into the manifest.

Facts of the layout (checked against the Hub repository's file list, card and commit history, and the
official repository's download script, config and data loader; no code of theirs is used):
- root files `train.jsonl`, `test.jsonl`; one JSON object a line with `target_id`, `reference_id`,
  `target` (e.g. "images/<target_id>.jpg"), `caption`, `appearance` {part label: path},
  `mask` {part label: path}, `structure` {"densepose": path, ...}; paths are relative to the root;
- one zip per folder: images.zip, densepose.zip, openpose.zip, segm.zip, face.zip, hair_headwear.zip,
  upper_body_clothes.zip, lower_body_clothes.zip, whole_body_clothes.zip, shoes.zip (the official script
  extracts them all into the root, so each holds its folder: `face/<id>_rgb.jpg`, `face/<id>_mask.jpg`,
  `densepose/<id>_densepose.png`, `images/<id>.jpg`);
- ids are DeepFashion-MultiModal image names, "<MEN|WOMEN>-<category>-id_<number>-<outfit>_<n>_<view>",
  e.g. "MEN-Denim-id_00000265-01_1_front" (views: front, side, back, full, additional, flat).
Assumed (not checkable offline; each is one named constant or one fallback): that each zip holds its
folder name as a prefix (a member is also found by its file name alone, MEMBER_LOOKUP_BY_NAME); that the
pinned revision DATASET_REVISION (the latest commit of `main`, "Update README.md", when this was written)
stays available; that the DensePose maps are IUV images with the part index in the blue channel (as the
project's shared DensePose notes establish from the released maps).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..core.dataset_layout import HUB_DATASET_ID, PART_FOLDERS
from ..core.labels import PART_LABELS
from ..core.weights import HUB_TIMEOUT_S

logger = logging.getLogger("parts2whole.examples")

DATASET_ID = HUB_DATASET_ID
#: The dataset commit read by default: the latest commit of `main` ("Update README.md", 2024-05-26) when this
#: module was written. Pinned so the selection (and the bytes read) do not change under our feet.
DATASET_REVISION = "1f3d6f3d9ac8043dbc8c9ab45dff4a0dd5b39a77"
DATASET_LICENSE = "Apache-2.0 (dataset card); images from DeepFashion-MultiModal"
TEST_INDEX = "test.jsonl"
TARGET_FOLDER = "images"
DENSEPOSE_KEY = "densepose"
ARCHIVE_SUFFIX = ".zip"
#: A wanted member missing under its full path is also looked up by its file name alone (in case a zip
#: was made from inside its folder). Off: only the exact path counts.
MEMBER_LOOKUP_BY_NAME = True

#: Selection sizes: ~8 examples (a varied set, see EXAMPLE_PROFILES) and ~24 poses for the gallery.
DEFAULT_EXAMPLE_COUNT = 8
DEFAULT_POSE_COUNT = 24
#: DensePose maps read per gallery pose, so the final pick can spread over facing and arm positions that
#: only the maps tell (1.5: 36 maps read for 24 shown).
POSE_CANDIDATE_FACTOR = 1.5
#: Largest member accepted (bytes, compressed or not): the dataset's JPEG/PNG files are well under 5 MB.
MAX_MEMBER_BYTES = 32 * 1024 * 1024
#: End of a zip read first, in one request: the end-of-central-directory record (22 bytes), the ZIP64
#: locator (20) and record (56) before it, and a comment of up to ~8 KB (a longer one costs zipfile's own
#: extra reads, up to 64 KB).
TAIL_BYTES = 8 * 1024
#: Extra bytes read after a member's data offset as the central directory predicts it: a local header's
#: extra field may be longer than the central one (ZIP64 sizes, timestamps). A longer one costs one more read.
LOCAL_HEADER_SLACK = 512

#: Where the cache lives: `<weights dir>/examples/<revision>/` (see parts2whole.studio.weights_dir), unless
#: P2W_EXAMPLES_DIR names the folder. P2W_EXAMPLES=off: never fetch (the cartoon examples only).
#: P2W_EXAMPLES_SOURCE=DIR: read a local copy of the dataset (test.jsonl and the zips) instead of the Hub.
CACHE_SUBDIR = "examples"
EXAMPLES_DIR_ENV = "P2W_EXAMPLES_DIR"
EXAMPLES_ENV = "P2W_EXAMPLES"
EXAMPLES_SOURCE_ENV = "P2W_EXAMPLES_SOURCE"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: Seconds the first Hub request may take before the Hub counts as unreachable (no retries: it is one
#: quick check, so a failed attempt is fast; the app then shows the cartoons and logs it once).

#: Example cards in the gallery: this tall, the real photo first (labelled), then the pose and the parts.
CARD_HEIGHT = 240
POSE_THUMB_HEIGHT = 160
GROUND_TRUTH_BAND = (24, 110, 60)  # the green label band under the real photo on a card
REAL_PERSON_LABEL = "REAL PHOTO"
REAL_PERSON_SUBLABEL = "ground truth"

_ID_PATTERN = re.compile(r"^(?P<gender>MEN|WOMEN)-(?P<category>[^-]+)-(?P<person>id_\d+)-(?P<outfit>\d+)_(?P<shot>\d+)_(?P<view>[a-z]+)$")


class ExampleFetchError(RuntimeError):
    """The dataset could not be read at all (no index, no archive, the Hub unreachable): say why in one line."""


# --------------------------------------------------------------------------------------------- samples


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

    @property
    def attributes(self) -> dict[str, str]:
        """gender (man/woman), category, person, view, outfit (dress / top+bottom / ...), hair, shoes (yes/no)."""
        match = _ID_PATTERN.match(self.target_id)
        groups = match.groupdict() if match else {}
        labels = set(self.parts) & set(self.masks)
        if "whole body clothes" in labels:
            outfit = "dress"
        elif {"upper body clothes", "lower body clothes"} <= labels:
            outfit = "top+bottom"
        elif "upper body clothes" in labels:
            outfit = "top"
        else:
            outfit = "other"
        return {
            "gender": {"MEN": "man", "WOMEN": "woman"}.get(groups.get("gender", ""), "unknown"),
            "category": groups.get("category", "unknown"),
            "person": f"{groups.get('person', self.target_id)}-{groups.get('outfit', '')}",
            "view": groups.get("view", "unknown"),
            "outfit": outfit,
            "hair": "yes" if "hair or headwear" in labels else "no",
            "shoes": "yes" if "shoes" in labels else "no",
        }

    @property
    def usable_labels(self) -> list[str]:
        """Part labels with both a photo and a mask, in the UI's order."""
        return [label for label in PART_LABELS if label in self.parts and label in self.masks]


def _canonical_part(key: str) -> str | None:
    from ..core.labels import canonical_label

    folders = {folder: label for label, folder in PART_FOLDERS.items()}
    if key in folders:
        return folders[key]
    try:
        return canonical_label(key)
    except Exception:  # noqa: BLE001 - an unknown key is skipped, not fatal
        return None


def parse_index(text: str) -> tuple[list[Sample], list[str]]:
    """Samples of a jsonl index (sorted by target id, then reference id) and notes about skipped lines."""
    samples, notes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            parts = {_canonical_part(k): v for k, v in (row.get("appearance") or {}).items()}
            masks = {_canonical_part(k): v for k, v in (row.get("mask") or {}).items()}
            structure = row.get("structure") or {}
            samples.append(Sample(
                target_id=str(row["target_id"]), reference_id=str(row.get("reference_id", "")),
                target=str(row["target"]), caption=str(row.get("caption", "")).strip(),
                parts={k: str(v) for k, v in parts.items() if k}, masks={k: str(v) for k, v in masks.items() if k},
                densepose=str(structure[DENSEPOSE_KEY]) if structure.get(DENSEPOSE_KEY) else None))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            notes.append(f"{TEST_INDEX} line {number} skipped ({type(error).__name__}: {error})")
    samples.sort(key=lambda s: (s.target_id, s.reference_id))
    return samples, notes


#: The example set, in order: each profile is the attributes wanted (see `Sample.attributes`). A sample
#: matching more of them wins; ties go to a category and a person not used yet, then to the lower id.
#: Together: men and women, dresses and tops with bottoms, with and without hair/headwear and shoes, and
#: front, side, back and full-body views.
EXAMPLE_PROFILES: tuple[dict[str, str], ...] = (
    {"gender": "woman", "outfit": "dress", "view": "front", "hair": "yes", "shoes": "yes"},
    {"gender": "man", "outfit": "top+bottom", "view": "front", "hair": "yes", "shoes": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "view": "side", "hair": "yes", "shoes": "yes"},
    {"gender": "man", "outfit": "top+bottom", "view": "side", "shoes": "no"},
    {"gender": "woman", "outfit": "dress", "view": "back", "hair": "yes"},
    {"gender": "woman", "outfit": "top+bottom", "view": "full", "shoes": "no"},
    {"gender": "man", "outfit": "top+bottom", "view": "full", "hair": "no"},
    {"gender": "woman", "outfit": "dress", "view": "side", "shoes": "no"},
)


def _is_example_candidate(sample: Sample) -> bool:
    return bool(sample.usable_labels) and sample.densepose is not None and bool(sample.target)


def select_examples(samples: Iterable[Sample], count: int = DEFAULT_EXAMPLE_COUNT) -> list[Sample]:
    """A deterministic, varied selection: one sample per profile of EXAMPLE_PROFILES (cycled for more)."""
    candidates = [s for s in samples if _is_example_candidate(s)]
    chosen: list[Sample] = []
    used_targets, used_people, used_categories = set(), set(), set()
    attributes = {id(s): s.attributes for s in candidates}
    for index in range(min(count, len({s.target_id for s in candidates}))):
        profile = EXAMPLE_PROFILES[index % len(EXAMPLE_PROFILES)]

        def rank(sample: Sample):
            found = attributes[id(sample)]
            matched = sum(found.get(key) == value for key, value in profile.items())
            return (-matched, found["category"] in used_categories, found["person"] in used_people,
                    sample.target_id, sample.reference_id)

        pool = [s for s in candidates if s.target_id not in used_targets]
        if not pool:
            break
        best = min(pool, key=rank)
        chosen.append(best)
        used_targets.add(best.target_id)
        used_people.add(attributes[id(best)]["person"])
        used_categories.add(attributes[id(best)]["category"])
    return chosen


#: Views in the order the gallery spreads over them (from the ids; "unknown" last).
POSE_VIEWS = ("front", "side", "back", "full", "additional", "flat", "unknown")


def pose_candidates(samples: Iterable[Sample], count: int, exclude: Iterable[str] = ()) -> list[Sample]:
    """`count` test targets with a DensePose map, spread over the views of their ids: round-robin over
    POSE_VIEWS, evenly spaced within each view's id-sorted list (so categories and genders spread too)."""
    excluded = set(exclude)
    unique: dict[str, Sample] = {}
    for sample in samples:
        if sample.densepose and sample.target_id not in excluded and sample.target_id not in unique:
            unique[sample.target_id] = sample
    by_view: dict[str, list[Sample]] = {view: [] for view in POSE_VIEWS}
    for sample in sorted(unique.values(), key=lambda s: s.target_id):
        view = sample.attributes["view"]
        by_view[view if view in by_view else "unknown"].append(sample)
    wanted = {view: 0 for view in POSE_VIEWS}
    remaining = min(count, len(unique))
    while remaining:
        for view in POSE_VIEWS:
            if remaining and wanted[view] < len(by_view[view]):
                wanted[view] += 1
                remaining -= 1
    picked = []
    for view in POSE_VIEWS:
        group, k = by_view[view], wanted[view]
        picked += [group[int((i + 0.5) * len(group) / k)] for i in range(k)]
    return picked


# --------------------------------------------------------------------------------------------- poses

#: DensePose part indices (the I of IUV; 0 = background). Left and right are the person's own sides.
DP_TORSO_BACK, DP_TORSO_FRONT = 1, 2
DP_HANDS = (3, 4)
DP_LOWER_ARMS = (19, 20, 21, 22)
DP_LEFT = (4, 5, 8, 10, 12, 14, 15, 17, 19, 21, 24)
DP_RIGHT = (3, 6, 7, 9, 11, 13, 16, 18, 20, 22, 23)
#: |left - right| / (left + right) of the limb areas from which a body is seen from the side.
SIDE_BALANCE = 0.35
#: Hands at least this high, as a share of the torso's height from its bottom (1 = the shoulders), are
#: "arms raised".
ARMS_RAISED_LEVEL = 0.85


@dataclasses.dataclass(frozen=True)
class PoseDescriptor:
    """What the gallery spreads over, measured on the DensePose map (see `describe_densepose`)."""

    facing: str  # front, back, side or unknown
    arms: str  # raised, down or unknown
    balance: float  # (left - right) / (left + right) limb area
    arm_height: float  # highest hand/forearm point above the torso bottom, in torso heights

    @property
    def label(self) -> str:
        return f"{self.facing} · arms {self.arms}" if self.arms != "unknown" else self.facing


def describe_densepose(image: Image.Image) -> PoseDescriptor:
    """Facing and arm position from an IUV map (part index in the blue channel, black background).

    facing: "side" when the left and right limb areas differ by SIDE_BALANCE or more, else "front" or
    "back" by whichever torso surface (I = 2 front, 1 back) covers more pixels. arms: "raised" when the
    highest hand (or forearm) pixel is at least ARMS_RAISED_LEVEL torso heights above the torso's bottom.
    Checked by eye on the five dataset maps in the official repository's testset/ (not copied here): front,
    front, side, three-quarter (side, balance -0.56), side, all arms down; matches what the maps show.
    """
    pixels = np.asarray(image.convert("RGB"))
    drawn = pixels.max(axis=2) > 0
    index = np.where(drawn, pixels[..., 2], 0)
    areas = np.bincount(index.ravel(), minlength=256)
    left, right = float(areas[list(DP_LEFT)].sum()), float(areas[list(DP_RIGHT)].sum())
    balance = (left - right) / (left + right) if left + right else 0.0
    torso = np.isin(index, (DP_TORSO_BACK, DP_TORSO_FRONT))
    if abs(balance) >= SIDE_BALANCE:
        facing = "side"
    elif torso.any():
        facing = "front" if areas[DP_TORSO_FRONT] >= areas[DP_TORSO_BACK] else "back"
    else:
        facing = "unknown"
    arms, arm_height = "unknown", 0.0
    rows = np.nonzero(torso.any(axis=1))[0]
    hands = np.isin(index, DP_HANDS)
    if not hands.any():
        hands = np.isin(index, DP_LOWER_ARMS)
    if rows.size and hands.any():
        top, bottom = rows[0], rows[-1]
        highest = np.nonzero(hands.any(axis=1))[0][0]
        arm_height = float((bottom - highest) / max(1, bottom - top))
        arms = "raised" if arm_height >= ARMS_RAISED_LEVEL else "down"
    return PoseDescriptor(facing, arms, round(balance, 3), round(arm_height, 3))


#: Order in which the gallery takes one pose from each (facing, arms) group, again and again.
POSE_GROUPS = tuple((facing, arms) for facing in ("front", "side", "back", "unknown")
                    for arms in ("raised", "down", "unknown"))


def spread_poses(described: list[tuple[Sample, PoseDescriptor]], count: int) -> list[tuple[Sample, PoseDescriptor]]:
    """`count` poses taken round-robin over POSE_GROUPS, each group in candidate order (deterministic)."""
    groups = {group: [item for item in described if (item[1].facing, item[1].arms) == group] for group in POSE_GROUPS}
    picked: list[tuple[Sample, PoseDescriptor]] = []
    while len(picked) < min(count, len(described)):
        for group in POSE_GROUPS:
            if groups[group] and len(picked) < count:
                picked.append(groups[group].pop(0))
    return picked


# --------------------------------------------------------------------------------------------- zip reads


class TransferError(Exception):
    """Reading from the file system failed (the connection, not the data): passes through zipfile unchanged."""


class ByteCounter:
    """Bytes read per file, and the ranges (for tests and the manifest)."""

    def __init__(self):
        self.bytes: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, count: int) -> None:
        with self._lock:
            self.bytes[name] = self.bytes.get(name, 0) + count
            self.requests[name] = self.requests.get(name, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of a remote file that reads only what is asked (one request per read,
    counted) and serves reads that fall inside a prefetched window from memory.

    `zipfile` sees an ordinary file: its small reads (end record, local headers) hit the prefetched
    windows, so a member costs one request."""

    def __init__(self, raw, size: int, name: str, counter: ByteCounter):
        super().__init__()
        self._raw, self._size, self._name, self._counter = raw, size, name, counter
        self._pos = 0
        self._windows: list[tuple[int, bytes]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fetch(self, start: int, end: int) -> bytes:
        end = min(end, self._size)
        if end <= start:
            return b""
        try:
            self._raw.seek(start)
            data = self._raw.read(end - start)
        except Exception as error:  # noqa: BLE001 - network/file errors, told apart from damaged data
            raise TransferError(f"{type(error).__name__}: {error}") from error
        self._counter.add(self._name, len(data))
        return data

    def prefetch(self, start: int, end: int) -> None:
        """Read [start, end) in one request and keep it for the reads that follow (the last few windows)."""
        start, end = max(0, start), min(end, self._size)
        if any(s <= start and end <= s + len(d) for s, d in self._windows):
            return
        self._windows = [*self._windows[-3:], (start, self._fetch(start, end))]

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        for start, data in self._windows:
            if start <= self._pos and end <= start + len(data):
                out = data[self._pos - start:end - start]
                self._pos = end
                return out
        out = self._fetch(self._pos, end)
        self._pos += len(out)
        return out

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class ArchiveReader:
    """Wanted members of one zip on an fsspec file system: the tail and the central directory, then one
    range per member. Errors per member are returned, not raised (a corrupt member drops one example)."""

    def __init__(self, fs, path: str, counter: ByteCounter):
        self.name = path.rsplit("/", 1)[-1]
        self.size = int(fs.size(path))
        self._raw = fs.open(path, "rb", cache_type="none")  # exact range reads, no read-ahead
        self._reader = RangeReader(self._raw, self.size, self.name, counter)
        before = counter.bytes.get(self.name, 0)
        self._reader.prefetch(self.size - TAIL_BYTES, self.size)
        try:
            self._zip = zipfile.ZipFile(self._reader)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            self.close()
            raise ExampleFetchError(f"{self.name} is not a readable zip archive ({error})") from None
        #: Bytes it took to learn where the members are (the tail and the central directory): a fixed cost per
        #: archive, proportional to its number of members, not to what is fetched.
        self.directory_bytes = counter.bytes.get(self.name, 0) - before
        self.members = len(self._zip.infolist())
        self._names = {info.filename: info for info in self._zip.infolist()}
        self._by_file_name = {}
        if MEMBER_LOOKUP_BY_NAME:
            for info in self._zip.infolist():
                self._by_file_name.setdefault(info.filename.rsplit("/", 1)[-1], info)

    def info(self, member: str) -> zipfile.ZipInfo | None:
        return self._names.get(member) or self._by_file_name.get(member.rsplit("/", 1)[-1])

    def read(self, member: str) -> bytes:
        """The member's bytes, CRC-checked; KeyError when absent, ValueError when damaged."""
        info = self.info(member)
        if info is None:
            raise KeyError(f"{member} is not in {self.name}")
        if info.file_size > MAX_MEMBER_BYTES or info.compress_size > MAX_MEMBER_BYTES:
            raise ValueError(f"{member} in {self.name} is {info.file_size} bytes, above {MAX_MEMBER_BYTES}")
        start = info.header_offset
        predicted = 30 + len(info.orig_filename.encode("utf-8")) + len(info.extra) + LOCAL_HEADER_SLACK
        self._reader.prefetch(start, start + predicted + info.compress_size)
        try:
            with self._zip.open(info) as handle:
                return handle.read()
        except TransferError:
            raise
        except Exception as error:  # noqa: BLE001 - BadZipFile (CRC, header), zlib.error, EOFError: damaged
            raise ValueError(f"{member} in {self.name} is damaged ({type(error).__name__}: {error})") from None

    def close(self) -> None:
        for closer in (getattr(self, "_zip", None), getattr(self, "_raw", None)):
            try:
                if closer is not None:
                    closer.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def archive_of(path: str) -> tuple[str, str]:
    """("face.zip", "face/<id>_rgb.jpg") for a dataset path "face/<id>_rgb.jpg"."""
    path = path.lstrip("./")
    folder = path.split("/", 1)[0] if "/" in path else ""
    if not folder:
        raise ValueError(f"dataset path {path!r} has no folder")
    return folder + ARCHIVE_SUFFIX, path


def decode_image(data: bytes, what: str) -> Image.Image:
    """A fully decoded image from member bytes, or ValueError saying what is wrong with it."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # noqa: BLE001 - any decoder failure means a damaged member
        raise ValueError(f"{what} is not a readable image ({type(error).__name__}: {error})") from None
    return ImageOps.exif_transpose(image)


# --------------------------------------------------------------------------------------------- manifest


@dataclasses.dataclass
class ExampleRecord:
    """One fetched example, paths relative to the cache folder."""

    sample_id: str  # the target id
    reference_id: str
    title: str
    prompt: str
    parts: dict[str, str]  # label -> reference photo
    masks: dict[str, str]  # label -> the dataset's soft mask
    pose: str  # the target's DensePose map
    target: str  # the real target photo (ground truth)
    card: str  # gallery thumbnail
    attributes: dict[str, str]
    hashes: dict[str, str]  # file -> pixel hash (preprocess.images.pixel_hash of load_image(file))


@dataclasses.dataclass
class PoseRecord:
    sample_id: str
    pose: str
    thumbnail: str
    facing: str
    arms: str
    view: str
    hash: str

    @property
    def label(self) -> str:
        return f"{self.facing} · arms {self.arms}" if self.arms != "unknown" else self.facing


@dataclasses.dataclass
class Manifest:
    """What a cache folder holds (manifest.json), and how many bytes it took to get."""

    dataset: str
    revision: str
    folder: Path
    examples: list[ExampleRecord]
    poses: list[PoseRecord]
    transfer: dict[str, Any]  # bytes read per file vs the file sizes
    notes: list[str]
    fetched_at: str = ""
    requested: dict[str, int] = dataclasses.field(default_factory=dict)

    def path(self, relative: str) -> str:
        return str(self.folder / relative)

    def to_json(self) -> dict:
        return {"version": MANIFEST_VERSION, "dataset": self.dataset, "revision": self.revision,
                "fetched_at": self.fetched_at, "requested": self.requested,
                "examples": [dataclasses.asdict(e) for e in self.examples],
                "poses": [dataclasses.asdict(p) for p in self.poses], "transfer": self.transfer, "notes": self.notes}

    @classmethod
    def from_json(cls, folder: Path, data: dict) -> Manifest:
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}")
        manifest = cls(dataset=data["dataset"], revision=data["revision"], folder=Path(folder),
                       examples=[ExampleRecord(**e) for e in data["examples"]],
                       poses=[PoseRecord(**p) for p in data["poses"]], transfer=data.get("transfer", {}),
                       notes=list(data.get("notes", [])), fetched_at=data.get("fetched_at", ""),
                       requested=dict(data.get("requested", {})))
        for relative in manifest.files():
            if not (manifest.folder / relative).is_file():
                raise ValueError(f"{relative} is missing from {folder}")
        return manifest

    def files(self) -> list[str]:
        names = []
        for example in self.examples:
            names += [*example.parts.values(), *example.masks.values(), example.pose, example.target, example.card]
        for pose in self.poses:
            names += [pose.pose, pose.thumbnail]
        return names


def default_cache_root() -> Path:
    """`P2W_EXAMPLES_DIR`, else `<weights dir>/examples` (the studio's weights folder, P2W_WEIGHTS_DIR)."""
    if os.environ.get(EXAMPLES_DIR_ENV):
        return Path(os.environ[EXAMPLES_DIR_ENV])
    from ..core.weights import weights_dir

    return weights_dir() / CACHE_SUBDIR


def cache_folder(revision: str = DATASET_REVISION, root: Path | None = None) -> Path:
    return Path(root if root is not None else default_cache_root()) / _safe_name(revision)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120] or "_"


def load_manifest(folder: Path) -> Manifest | None:
    """The cache in `folder` when it is complete (every file present), else None."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(Path(folder), json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Examples cache %s is unusable (%s): it will be fetched again.", folder, error)
        return None


def cached_manifest(revision: str = DATASET_REVISION, root: Path | None = None, count: int | None = None,
                    poses: int | None = None) -> Manifest | None:
    """The cached selection of `revision`, if it is there and (when given) at least as large as asked."""
    manifest = load_manifest(cache_folder(revision, root))
    if manifest is None:
        return None
    requested = manifest.requested
    if count is not None and requested.get("examples", 0) < count:
        return None
    if poses is not None and requested.get("poses", 0) < poses:
        return None
    return manifest


# --------------------------------------------------------------------------------------------- fetch


def hub_file_system(revision: str = DATASET_REVISION):
    """(fs, root) reading the Hub dataset at `revision` through HfFileSystem (range requests).

    One quick request first (HUB_TIMEOUT_S, no retries), so an unreachable Hub fails in seconds."""
    from huggingface_hub import HfApi, HfFileSystem

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise ExampleFetchError("HF_HUB_OFFLINE is set")
    try:
        HfApi().dataset_info(DATASET_ID, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - reported as one line
        from ..core.weights import is_unreachable

        detail = f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
        if is_unreachable(error):
            raise ExampleFetchError(f"the Hugging Face Hub could not be reached ({detail})") from None
        raise ExampleFetchError(f"{DATASET_ID}@{revision[:12]} could not be read ({detail})") from None
    return HfFileSystem(), f"datasets/{DATASET_ID}@{revision}"


def local_file_system(folder: str | os.PathLike):
    """(fs, root) reading a local copy of the dataset (a folder with test.jsonl and the zips)."""
    from fsspec.implementations.local import LocalFileSystem

    if not Path(folder).is_dir():
        raise ExampleFetchError(f"{folder} is not a folder (a local copy of {DATASET_ID} was expected)")
    return LocalFileSystem(), str(Path(folder).resolve())


def default_file_system(revision: str = DATASET_REVISION):
    """The local copy named by P2W_EXAMPLES_SOURCE, else the Hub (see `hub_file_system`)."""
    source = os.environ.get(EXAMPLES_SOURCE_ENV)
    return local_file_system(source) if source else hub_file_system(revision)


def _title(attributes: dict[str, str]) -> str:
    outfit = {"dress": "dress", "top+bottom": "top and bottom", "top": "top"}.get(attributes["outfit"], "outfit")
    who = {"man": "Man", "woman": "Woman"}.get(attributes["gender"], "Person")
    return f"{who} · {outfit} · {attributes['view']} view"


def _slug(sample_id: str) -> str:
    return _safe_name(sample_id)


def fetch_examples(fs=None, root: str | None = None, *, revision: str = DATASET_REVISION,
                   count: int = DEFAULT_EXAMPLE_COUNT, poses: int = DEFAULT_POSE_COUNT,
                   cache_root: Path | None = None, progress: Callable[[str], None] | None = None) -> Manifest:
    """Fetch the selection into the cache and return its manifest (reused when already complete).

    `fs`/`root`: an fsspec file system and the dataset's root on it (default: the Hub dataset at
    `revision` through HfFileSystem). Raises ExampleFetchError when nothing usable could be read; damaged
    or missing members drop the example (or pose) they belong to, with a note in the manifest.
    """
    from filelock import FileLock

    folder = cache_folder(revision, cache_root)
    cached = cached_manifest(revision, cache_root, count, poses)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        cached = cached_manifest(revision, cache_root, count, poses)  # another process may have finished it
        if cached is not None:
            return cached
        if fs is None:
            fs, root = hub_file_system(revision)
        return _fetch_into(fs, str(root).rstrip("/"), folder, revision, count, poses, progress or (lambda _: None))


def _fetch_into(fs, root: str, folder: Path, revision: str, count: int, pose_count: int,
                progress: Callable[[str], None]) -> Manifest:
    from preprocess.images import load_image, pixel_hash

    counter = ByteCounter()
    notes: list[str] = []
    started = time.perf_counter()
    try:
        index_bytes = fs.cat_file(f"{root}/{TEST_INDEX}")
    except FileNotFoundError:
        raise ExampleFetchError(f"{TEST_INDEX} is not in the dataset at {root}") from None
    except Exception as error:  # noqa: BLE001 - network and permission errors, in one line
        raise ExampleFetchError(f"could not read {TEST_INDEX} ({type(error).__name__}: {error})") from None
    counter.add(TEST_INDEX, len(index_bytes))
    samples, index_notes = parse_index(index_bytes.decode("utf-8", errors="replace"))
    notes += index_notes[:5] + ([f"... and {len(index_notes) - 5} more lines skipped"] if len(index_notes) > 5 else [])
    if not samples:
        raise ExampleFetchError(f"{TEST_INDEX} has no usable sample")
    chosen = select_examples(samples, count)
    candidates = pose_candidates(samples, max(pose_count, round(pose_count * POSE_CANDIDATE_FACTOR)),
                                 exclude=[s.target_id for s in chosen])
    progress(f"{len(samples)} test samples; reading {len(chosen)} examples and {len(candidates)} pose maps")

    wanted: dict[str, set[str]] = {}
    for sample in chosen:
        for path in [*(sample.parts[l] for l in sample.usable_labels), *(sample.masks[l] for l in sample.usable_labels),
                     sample.target, sample.densepose]:
            archive, member = archive_of(path)
            wanted.setdefault(archive, set()).add(member)
    for sample in candidates:
        archive, member = archive_of(sample.densepose)
        wanted.setdefault(archive, set()).add(member)

    data: dict[str, bytes] = {}
    failures: dict[str, str] = {}
    interrupted: list[str] = []  # archives lost to a network (or other passing) error: nothing is cached then
    sizes: dict[str, int] = {}
    directories: dict[str, tuple[int, int]] = {}
    for archive in sorted(wanted):
        try:
            reader = ArchiveReader(fs, f"{root}/{archive}", counter)
        except FileNotFoundError:
            failures.update({member: f"{archive} is not in the dataset" for member in wanted[archive]})
            continue
        except ExampleFetchError as error:
            failures.update({member: str(error) for member in wanted[archive]})
            continue
        except Exception as error:  # noqa: BLE001 - network errors: every member of it is lost
            interrupted.append(f"{archive}: {type(error).__name__}: {' '.join(str(error).split())[:160]}")
            continue
        sizes[archive] = reader.size
        directories[archive] = (reader.directory_bytes, reader.members)
        try:
            for member in sorted(wanted[archive]):
                try:
                    data[member] = reader.read(member)
                except (KeyError, ValueError) as error:
                    failures[member] = str(error).strip("'\"")
                except Exception as error:  # noqa: BLE001 - the connection dropped: try again next time
                    interrupted.append(f"{member}: {type(error).__name__}: {' '.join(str(error).split())[:160]}")
                    break
        finally:
            reader.close()
        progress(f"{archive}: {counter.bytes.get(archive, 0) / 1e6:.2f} MB read of {reader.size / 1e6:.1f} MB")

    if interrupted:
        raise ExampleFetchError(f"reading the archives was interrupted ({interrupted[0]}); nothing was cached, "
                                "the next start tries again")
    staging = folder / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "poses").mkdir(parents=True)

    def member_bytes(path: str) -> bytes:
        member = archive_of(path)[1]
        if member in failures:
            raise ValueError(failures[member])
        return data[member]

    def write(relative: str, payload: bytes, what: str) -> Image.Image:
        image = decode_image(payload, what)
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(payload)
        return image

    examples: list[ExampleRecord] = []
    for sample in chosen:
        slug = _slug(sample.target_id)
        try:
            parts, masks, hashes, tiles = {}, {}, {}, []
            for label in sample.usable_labels:
                key = label.replace(" ", "_")
                suffix = Path(sample.parts[label]).suffix.lower() or ".jpg"
                parts[label] = f"{slug}/{key}{suffix}"
                masks[label] = f"{slug}/{key}_mask{Path(sample.masks[label]).suffix.lower() or '.jpg'}"
                photo = write(parts[label], member_bytes(sample.parts[label]), f"{label} photo of {sample.target_id}")
                write(masks[label], member_bytes(sample.masks[label]), f"{label} mask of {sample.target_id}")
                tiles.append(photo)
            pose_path = f"{slug}/pose{Path(sample.densepose).suffix.lower() or '.png'}"
            target_path = f"{slug}/target{Path(sample.target).suffix.lower() or '.jpg'}"
            pose_image = write(pose_path, member_bytes(sample.densepose), f"DensePose map of {sample.target_id}")
            target_image = write(target_path, member_bytes(sample.target), f"photo of {sample.target_id}")
            for relative in [*parts.values(), pose_path]:
                hashes[relative] = pixel_hash(load_image(str(staging / relative)))
            card = f"{slug}/card.jpg"
            example_card(target_image, pose_image, tiles).save(staging / card, quality=90)
        except (ValueError, OSError) as error:
            notes.append(f"example {sample.target_id} skipped: {error}")
            shutil.rmtree(staging / slug, ignore_errors=True)
            continue
        attributes = sample.attributes
        examples.append(ExampleRecord(sample.target_id, sample.reference_id, _title(attributes), sample.caption,
                                      parts, masks, pose_path, target_path, card, attributes, hashes))

    described: list[tuple[Sample, PoseDescriptor]] = []
    pose_images: dict[str, tuple[bytes, Image.Image]] = {}
    for sample in candidates:
        try:
            payload = member_bytes(sample.densepose)
            image = decode_image(payload, f"DensePose map of {sample.target_id}")
        except ValueError as error:
            notes.append(f"pose {sample.target_id} skipped: {error}")
            continue
        pose_images[sample.target_id] = (payload, image)
        described.append((sample, describe_densepose(image)))
    pose_records = []
    for sample, descriptor in spread_poses(described, pose_count):
        payload, image = pose_images[sample.target_id]
        slug = _slug(sample.target_id)
        relative, thumb = f"poses/{slug}{Path(sample.densepose).suffix.lower() or '.png'}", f"poses/{slug}_thumb.png"
        (staging / relative).write_bytes(payload)
        small = image.convert("RGB")
        small.thumbnail((POSE_THUMB_HEIGHT * 2, POSE_THUMB_HEIGHT), Image.Resampling.LANCZOS)
        small.save(staging / thumb)
        pose_records.append(PoseRecord(sample.target_id, relative, thumb, descriptor.facing, descriptor.arms,
                                       sample.attributes["view"], pixel_hash(load_image(str(staging / relative)))))
    if not examples and not pose_records:
        shutil.rmtree(staging, ignore_errors=True)
        reasons = "; ".join(notes[:3]) or "nothing could be read"
        raise ExampleFetchError(f"no example could be read from the dataset: {reasons}")

    transfer = transfer_report(counter, sizes, len(index_bytes), len(examples), len(pose_records),
                               time.perf_counter() - started, directories)
    manifest = Manifest(DATASET_ID, revision, folder, examples, pose_records, transfer, notes,
                        fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        requested={"examples": count, "poses": pose_count})
    _publish(staging, folder, manifest)
    return manifest


def transfer_report(counter: ByteCounter, sizes: dict[str, int], index_size: int, examples: int, poses: int,
                    seconds: float, directories: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Bytes read per archive, against its size (the share must stay small: only members are read), and the
    part of them spent on the archive's directory (tail + central directory) and its member count."""
    directories = directories or {}
    archives = {name: {"bytes_read": counter.bytes.get(name, 0), "archive_bytes": size,
                       "share": counter.bytes.get(name, 0) / size if size else 0.0,
                       "requests": counter.requests.get(name, 0),
                       "directory_bytes": directories.get(name, (0, 0))[0],
                       "members_in_archive": directories.get(name, (0, 0))[1]} for name, size in sorted(sizes.items())}
    total = counter.total
    return {"bytes_read": total, "index_bytes": index_size, "archives": archives,
            "directory_bytes": sum(a["directory_bytes"] for a in archives.values()),
            "archive_bytes": sum(sizes.values()),
            "bytes_per_example": total / examples if examples else None,
            "max_share": max((a["share"] for a in archives.values()), default=0.0),
            "examples": examples, "poses": poses, "seconds": round(seconds, 2)}


def _publish(staging: Path, folder: Path, manifest: Manifest) -> None:
    """Move the staged files into the cache folder, then write the manifest last (atomically)."""
    for item in staging.iterdir():
        destination = folder / item.name
        if destination.is_dir():
            shutil.rmtree(destination)
        elif destination.exists():
            destination.unlink()
        os.replace(item, destination)
    shutil.rmtree(staging, ignore_errors=True)
    temporary = folder / (MANIFEST_NAME + ".tmp")
    temporary.write_text(json.dumps(manifest.to_json(), indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, folder / MANIFEST_NAME)


# --------------------------------------------------------------------------------------------- cards


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def example_card(target: Image.Image, pose: Image.Image, parts: list[Image.Image], height: int = CARD_HEIGHT) -> Image.Image:
    """The gallery thumbnail: the real photo (green band: "REAL PHOTO / ground truth"), a thin gap, the pose
    map, then the part photos in a two-row grid."""

    def fit(image: Image.Image, box_h: int, box_w: int | None = None) -> Image.Image:
        image = image.convert("RGB")
        scale = box_h / image.height
        if box_w is not None:
            scale = min(scale, box_w / image.width)
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                            Image.Resampling.LANCZOS)

    band = max(28, height // 7)  # two lines of text under the photo
    photo = fit(target, height - band)
    pose_tile = fit(pose, height - band)
    rows = 2
    tile_h = (height - band) // rows
    tile_w = round(tile_h * 0.75)
    columns = max(1, -(-len(parts) // rows))
    gap = 6
    width = photo.width + gap + pose_tile.width + gap + columns * tile_w
    card = Image.new("RGB", (width, height), (245, 245, 245))
    card.paste(photo, (0, 0))
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, height - band, photo.width, height), fill=GROUND_TRUTH_BAND)
    font = _font(max(9, band * 2 // 5))
    line = band // 2
    draw.text((4, height - band + 1), REAL_PERSON_LABEL, fill=(255, 255, 255), font=font)
    draw.text((4, height - band + line), REAL_PERSON_SUBLABEL, fill=(255, 255, 255), font=font)
    x = photo.width + gap
    card.paste(pose_tile, (x, 0))
    draw.text((x + 4, height - band + 2), "DensePose", fill=(60, 60, 60), font=font)
    x += pose_tile.width + gap
    for index, part in enumerate(parts):
        tile = fit(part, tile_h, tile_w)
        column, row = divmod(index, rows)
        card.paste(tile, (x + column * tile_w + (tile_w - tile.width) // 2, row * tile_h + (tile_h - tile.height) // 2))
    draw.text((x + 4, height - band + 2), "parts", fill=(60, 60, 60), font=font)
    return card


# --------------------------------------------------------------------------------------------- library

STATE_CACHED = "cached"  # the fetched examples are shown
STATE_FETCHING = "fetching"
STATE_OFFLINE = "offline"  # not fetched on purpose (HF_HUB_OFFLINE, P2W_EXAMPLES=off)
STATE_FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the UI shows now: a version that changes when the content does, the state, one line, the data."""

    version: int
    state: str
    note: str
    manifest: Manifest | None


class ExampleLibrary:
    """The examples the app shows: the cache when complete, else a background fetch (never waited for)
    while the cartoons are shown; a failed fetch is logged once and leaves the cartoons.

    Why a background fetch at start rather than at build time (Spaces' `preload_from_hub`, a Docker step):
    it works the same everywhere (local, Docker, Spaces), costs the start-up nothing, and `preload_from_hub`
    can only download whole files, while the examples are members of multi-GB zips. Build-time prefetching
    stays possible with `python -m parts2whole examples fetch` (the Dockerfile's PREFETCH_EXAMPLES)."""

    def __init__(self, revision: str = DATASET_REVISION, cache_root: Path | None = None,
                 count: int = DEFAULT_EXAMPLE_COUNT, poses: int = DEFAULT_POSE_COUNT,
                 file_system: Callable[[str], tuple[Any, str]] | None = None):
        self.revision, self.cache_root, self.count, self.poses = revision, cache_root, count, poses
        self._file_system = file_system or default_file_system
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._version = 0
        manifest = cached_manifest(revision, cache_root)
        if manifest is not None and manifest.examples:
            self._set(STATE_CACHED, _cached_note(manifest), manifest)
        elif _fetch_disabled():
            self._set(STATE_OFFLINE, f"Showing the drawn examples: {_fetch_disabled()}, so the photo examples "
                      f"from {DATASET_ID} are not fetched (prefetch them with `python -m parts2whole examples fetch`).",
                      None)
        else:
            self._set(STATE_FETCHING, f"Showing the drawn examples while photo examples are fetched from {DATASET_ID}...",
                      None)

    def _set(self, state: str, note: str, manifest: Manifest | None) -> None:
        with self._lock:
            self._state, self._note, self._manifest = state, note, manifest
            self._version += 1
        if manifest is not None:
            register_manifest(manifest)

    @property
    def cache_dir(self) -> Path:
        return cache_folder(self.revision, self.cache_root)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._version, self._state, self._note, self._manifest)

    def start_background_fetch(self) -> None:
        """Fetch in a daemon thread when needed; returns at once."""
        if self.snapshot().state != STATE_FETCHING or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._fetch, name="parts2whole-examples", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> Snapshot:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def _fetch(self) -> None:
        try:
            fs, root = self._file_system(self.revision)
            manifest = fetch_examples(fs, root, revision=self.revision, count=self.count, poses=self.poses,
                                      cache_root=self.cache_root)
        except Exception as error:  # noqa: BLE001 - any failure: one log line, the cartoons stay
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            logger.warning("Photo examples not fetched (%s); showing the drawn examples.", reason)
            self._set(STATE_FAILED, f"Showing the drawn examples: the photo examples could not be fetched ({reason}).",
                      None)
            return
        if not manifest.examples:
            self._set(STATE_FAILED, "Showing the drawn examples: no photo example could be read "
                      f"({'; '.join(manifest.notes[:2])}).", None)
            return
        logger.info("Photo examples ready: %d examples, %d poses, %.1f MB read.", len(manifest.examples),
                    len(manifest.poses), manifest.transfer.get("bytes_read", 0) / 1e6)
        self._set(STATE_CACHED, _cached_note(manifest), manifest)


def _cached_note(manifest: Manifest) -> str:
    skipped = [note for note in manifest.notes if "skipped" in note]
    extra = f" {len(skipped)} left out (damaged or missing in the dataset): {skipped[0]}." if skipped else ""
    return (f"Photo examples: {len(manifest.examples)} test samples of {manifest.dataset} "
            f"(revision {manifest.revision[:7]}); each card starts with the real photo, the ground truth.{extra}")


def _fetch_disabled() -> str | None:
    if os.environ.get(EXAMPLES_ENV, "").lower() in {"0", "off", "false", "no"}:
        return f"{EXAMPLES_ENV}={os.environ[EXAMPLES_ENV]}"
    if os.environ.get(EXAMPLES_SOURCE_ENV):
        return None  # a local copy: no network needed
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    return None


# --------------------------------------------------------------------------------------------- provenance

_KNOWN: dict[str, dict[str, str]] = {}
_KNOWN_MASKS: dict[str, str] = {}
_KNOWN_LOCK = threading.Lock()


def register_manifest(manifest: Manifest) -> None:
    """Remember the pixel hashes of the cached parts and poses, so a picture put into a slot can be traced
    back to its dataset sample (the bundle says where a pose came from; a part gets the dataset's mask)."""
    with _KNOWN_LOCK:
        for example in manifest.examples:
            for label, relative in example.parts.items():
                digest = example.hashes.get(relative)
                if digest:
                    _KNOWN[digest] = {"dataset": manifest.dataset, "revision": manifest.revision,
                                      "sample": example.sample_id, "reference": example.reference_id,
                                      "role": f"{label} reference"}
                    _KNOWN_MASKS[digest] = manifest.path(example.masks[label])
            digest = example.hashes.get(example.pose)
            if digest:
                _KNOWN[digest] = {"dataset": manifest.dataset, "revision": manifest.revision,
                                  "sample": example.sample_id, "role": "DensePose map of the target"}
        for pose in manifest.poses:
            _KNOWN[pose.hash] = {"dataset": manifest.dataset, "revision": manifest.revision, "sample": pose.sample_id,
                                 "role": "DensePose map of the target"}


def dataset_source(image: Image.Image | None) -> dict[str, str] | None:
    """{"dataset", "revision", "sample", "role"} when `image` (as loaded by preprocess.images) is a cached
    dataset picture, else None."""
    if image is None or not _KNOWN:
        return None
    from preprocess.images import pixel_hash

    with _KNOWN_LOCK:
        found = _KNOWN.get(pixel_hash(image))
    return dict(found) if found else None


def dataset_mask_path(image: Image.Image | None) -> str | None:
    """The dataset's soft mask of a cached reference photo, else None."""
    if image is None or not _KNOWN_MASKS:
        return None
    from preprocess.images import pixel_hash

    with _KNOWN_LOCK:
        return _KNOWN_MASKS.get(pixel_hash(image))


# --------------------------------------------------------------------------------------------- text


def format_transfer(transfer: dict[str, Any]) -> list[str]:
    """The bytes report as lines (the CLI prints them)."""
    lines = []
    total, archives = transfer.get("bytes_read", 0), transfer.get("archives", {})
    per_example = transfer.get("bytes_per_example")
    lines.append(f"read {total / 1e6:.2f} MB in all ({transfer.get('index_bytes', 0) / 1e6:.2f} MB of it {TEST_INDEX}, "
                 f"{transfer.get('directory_bytes', 0) / 1e6:.2f} MB the archives' directories) "
                 f"for {transfer.get('examples', 0)} examples and {transfer.get('poses', 0)} poses"
                 + (f": {per_example / 1e6:.2f} MB per example" if per_example else "")
                 + f", in {transfer.get('seconds', 0):.1f} s")
    for name, item in archives.items():
        lines.append(f"  {name:<24} {item['bytes_read'] / 1e6:9.3f} MB of {item['archive_bytes'] / 1e6:10.1f} MB "
                     f"({item['share']:.3%}, {item['requests']} requests; directory {item.get('directory_bytes', 0) / 1e6:.3f} MB "
                     f"for {item.get('members_in_archive', 0)} members)")
    if archives:
        lines.append(f"largest share of one archive: {transfer.get('max_share', 0):.3%}")
    return lines
