"""A local stand-in for `huanngzh/DeepFashion-MultiModal-Parts2Whole`, in the real layout, with tiny images.

What it holds, each a fact of the real dataset (parts2whole.core.dataset_layout says where each comes from):
- train.jsonl and test.jsonl with the real keys (target_id, reference_id, target, caption, appearance, mask,
  structure with both densepose and openpose); every line lists all six part labels, "whole body clothes"
  (the crop of the whole outfit) included; captions in DeepFashion-MultiModal's style; ids like
  "MEN-Denim-id_00000265-01_1_front", whose shop category need not match the outfit (MEN-Denim in shorts);
- one zip per folder with the real member naming (`face/<id>_rgb.jpg`, `face/<id>_mask.jpg`,
  `densepose/<id>_densepose.png`, `openpose/<id>.png`, `images/<id>.jpg`);
- part photos named `.jpg` that are JPEG or WebP, at odd sizes (the real ones / 10), their masks the same size
  as 3-channel JPEGs with soft edges; photos and maps at 75x110 (750x1101 / 10);
- archives as large as the real ones (REAL_ARCHIVE_BYTES: sparse files, a few MB on disk), so the share of
  each that a fetch reads is measured against a real size; the three over 4 GiB are true ZIP64 archives with
  half their members past 4 GiB;
- the unconfirmed hazards: all-black masks for parts that are not visible (a face in a back view, shoes under
  a long dress, no hair), blank and near-blank DensePose maps (nobody found).
Each zip also holds many filler members (random bytes, stored): reading one, or the whole archive, shows
up in the counted bytes. `truth` (returned by `build_standin`) says per line what is really there.

`standin_root()` builds it once per test session (read-only: tests that damage members work on
`copy_standin`, which hard-links the archives it does not change and copies the others sparsely).
`CountingFileSystem` is a local fsspec file system that counts every byte read (and records the ranges).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import random
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from PIL import Image, ImageDraw, ImageFilter

PART_FOLDERS = {"face": "face", "hair or headwear": "hair_headwear", "upper body clothes": "upper_body_clothes",
                "lower body clothes": "lower_body_clothes", "whole body clothes": "whole_body_clothes", "shoes": "shoes"}
VIEWS = ["1_front", "2_side", "3_back", "4_full", "7_additional"]
#: Outfits in turn: (gender, shop category, caption parts, the outfit text a title must say). The caption
#: parts: ("piece", name) for one piece, ("top", sleeve, top, bottom sentence) for a top and a bottom.
OUTFITS = [
    ("WOMEN", "Dresses", ("piece", "long-sleeve", "dress"), "dress"),
    ("MEN", "Denim", ("top", "short-sleeve", "shirt", "The pants this {who} wears is of short length."),
     "short-sleeve shirt and shorts"),
    ("WOMEN", "Skirts", ("top", "sleeveless", "tank top", "The skirt this {who} wears is of long length."),
     "sleeveless tank top and skirt"),
    ("MEN", "Pants", ("top", "long-sleeve", "shirt", "The trousers this {who} wears is of long length."),
     "long-sleeve shirt and trousers"),
    ("WOMEN", "Rompers_Jumpsuits", ("piece", "sleeveless", "jumpsuit"), "jumpsuit"),
    ("WOMEN", "Tees_Tanks", ("top", "short-sleeve", "T-shirt", "The pants this {who} wears is of long length."),
     "short-sleeve T-shirt and trousers"),
    ("MEN", "Shirts_Polos", ("top", "short-sleeve", "polo", "The pants this {who} wears is of three-quarter length."),
     "short-sleeve polo and trousers"),
    ("WOMEN", "Shorts", ("top", "long-sleeve", "blouse", "The pants this {who} wears is of three-point length."),
     "long-sleeve blouse and shorts"),
    ("WOMEN", "Denim", ("top", "short-sleeve", "T-shirt", "She wears overalls with denim fabric."),
     "short-sleeve T-shirt and overalls"),
    ("MEN", "Tees_Tanks", ("top", "sleeveless", "tank top", "The pants this {who} wears is of medium short length."),
     "sleeveless tank top and shorts"),
]
#: Part photo sizes in turn (the real odd sizes 502x736, 1931x2835 and 512x768, / 10).
PART_SIZES = [(50, 74), (193, 283), (51, 77)]
PHOTO_SIZE = (75, 110)
#: Test lines whose DensePose map is blank (nobody found) or near-blank (a few pixels).
BLANK_MAPS = {0, 17, 31}
NEAR_BLANK_MAPS = {44}
#: Apparent sizes of the archives, those of the real ones where known (the project README's figures for the
#: pinned revision: face.zip 1.35 GB, densepose.zip 6.15 GB, images.zip 6.82 GB, whole_body_clothes.zip
#: 12.4 GB); the others get the smallest real size, 1.35 GB (a lower bound: a share read measured against it
#: is at least the real share). A sparse hole in the middle of each gives it that size on a few MB of disk,
#: so the later members of the archives over 4 GiB sit past 4 GiB and need ZIP64, as in the real ones.
SMALLEST_REAL_ARCHIVE = 1_350_000_000
REAL_ARCHIVE_BYTES = {"face.zip": 1_350_000_000, "densepose.zip": 6_150_000_000, "images.zip": 6_820_000_000,
                      "whole_body_clothes.zip": 12_400_000_000}
ZIP64_ARCHIVES = tuple(name for name, size in REAL_ARCHIVE_BYTES.items() if size > 2**32)
FILLER_MEMBERS = 80
FILLER_BYTES = 16_000
#: The training split: (outfit, view, empty parts, blank map); line 2 shows nobody, line 3 hides its shoes.
TRAIN_LINES = [(3, "1_front", (), False), (1, "2_side", (), False), (0, "1_front", (), True),
               (5, "4_full", ("shoes",), False)]


def _encode(image: Image.Image, webp: bool = False) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP" if webp else "JPEG", quality=85)
    return buffer.getvalue()


def part_photo(rng: random.Random, size, webp: bool) -> bytes:
    colour = tuple(rng.randrange(40, 220) for _ in range(3))
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4),
                                  fill=tuple(255 - c for c in colour))
    return _encode(image, webp)


def soft_mask(size, empty: bool) -> bytes:
    """A 3-channel JPEG mask with soft edges (all black when the part is not visible)."""
    image = Image.new("RGB", size, (0, 0, 0))
    if not empty:
        ImageDraw.Draw(image).ellipse((size[0] // 6, size[1] // 6, 5 * size[0] // 6, 5 * size[1] // 6),
                                      fill=(255, 255, 255))
        image = image.filter(ImageFilter.GaussianBlur(max(1, size[0] // 25)))
    return _encode(image)


def densepose_map(view: str, arms_up: bool, size=(96, 144), variant: int = 0) -> Image.Image:
    """An IUV-like map: part index in blue, bright U/V in green/red, black background (`variant` shifts the
    U/V values, so every sample's map is a different picture)."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)

    def blob(index: int, box):
        x0, y0, x1, y1 = (int(v) for v in box)
        pixels[y0:y1, x0:x1, 2] = index
        pixels[y0:y1, x0:x1, 1] = 90 + 6 * index
        pixels[y0:y1, x0:x1, 0] = 200 - 5 * index - variant % 50

    torso = 1 if view == "back" else 2
    blob(torso, (width * 0.35, height * 0.22, width * 0.65, height * 0.55))
    blob(23, (width * 0.42, height * 0.05, width * 0.5, height * 0.2))
    blob(24, (width * 0.5, height * 0.05, width * 0.58, height * 0.2))
    sides = [("right", 0.25), ("left", 0.65)] if view != "side" else [("left", 0.65)]
    for side, x in sides:
        hand = 3 if side == "right" else 4
        arm = 16 if side == "right" else 15
        blob(arm, (width * x, height * 0.22, width * (x + 0.1), height * 0.4))
        hand_y = 0.08 if arms_up else 0.5
        blob(hand, (width * x, height * hand_y, width * (x + 0.1), height * (hand_y + 0.08)))
        leg = 9 if side == "right" else 10
        blob(leg, (width * (0.38 if side == "right" else 0.52), height * 0.55, width * (0.48 if side == "right" else 0.62), height * 0.95))
    if view == "side":
        blob(12, (width * 0.52, height * 0.55, width * 0.62, height * 0.95))
    return Image.fromarray(pixels)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def caption(outfit: int, hat: bool) -> str:
    """A caption in DeepFashion-MultiModal's style for OUTFITS[outfit]."""
    gender, _, garments, _ = OUTFITS[outfit]
    who, his = ("gentleman", "his") if gender == "MEN" else ("lady", "her")
    if garments[0] == "piece":
        text = (f"The {who} wears a {garments[1]} {garments[2]} with pure color patterns. The {garments[2]} is "
                f"with chiffon fabric. It has a v-shape neckline.")
    else:
        text = (f"This {who} is wearing a {garments[1]} {garments[2]} with graphic patterns. The {garments[2]} is "
                f"with cotton fabric. It has a round neckline. {garments[3].format(who=who)} The lower clothing "
                f"is with denim fabric and pure color patterns.")
    return text + (f" There is a hat in {his} head." if hat else "") + f" This {who} wears a ring."


def _line(number: int, outfit: int, view: str, empty: tuple[str, ...], map_kind: str, rng: random.Random,
          members: dict[str, dict[str, bytes]]) -> tuple[dict, dict]:
    """One index line and its members (added to `members`), and the truth about it."""
    gender, category = OUTFITS[outfit][:2]
    person = f"id_{1000 + number:08d}-0{1 + number % 2}"
    target_id = f"{gender}-{category}-{person}_{view}"
    reference_id = f"{gender}-{category}-{person}_{VIEWS[(VIEWS.index(view) + 1) % len(VIEWS)]}"
    hat = outfit in (3, 9) and (number // len(OUTFITS)) % 2 == 0
    appearance, mask = {}, {}
    size = PART_SIZES[number % len(PART_SIZES)]
    for label, folder in PART_FOLDERS.items():  # every line lists all six labels
        appearance[label] = f"{folder}/{reference_id}_rgb.jpg"
        mask[label] = f"{folder}/{reference_id}_mask.jpg"
        members[f"{folder}.zip"][appearance[label]] = part_photo(rng, size, webp=number % 2 == 1)
        members[f"{folder}.zip"][mask[label]] = soft_mask(size, label in empty)
    target = f"images/{target_id}.jpg"
    members["images.zip"][target] = _encode(Image.new("RGB", PHOTO_SIZE, tuple(rng.randrange(256) for _ in range(3))))
    short_view = view.split("_", 1)[1]
    pose = densepose_map(short_view if short_view in ("side", "back") else "front", arms_up=number % 6 in (0, 5),
                         size=PHOTO_SIZE, variant=number)
    if map_kind != "ok":
        pixels = np.zeros((PHOTO_SIZE[1], PHOTO_SIZE[0], 3), np.uint8)
        if map_kind == "near-blank":
            pixels[50:53, 30:33] = (180, 100, 2)  # a few stray pixels: nobody, really
        pose = Image.fromarray(pixels)
    densepose, openpose = f"densepose/{target_id}_densepose.png", f"openpose/{target_id}.png"
    members["densepose.zip"][densepose] = _png(pose)
    members["openpose.zip"][openpose] = _png(Image.new("RGB", PHOTO_SIZE))
    row = {"target_id": target_id, "reference_id": reference_id, "target": target, "caption": caption(outfit, hat),
           "appearance": appearance, "mask": mask, "structure": {"densepose": densepose, "openpose": openpose}}
    gender_word = "man" if gender == "MEN" else "woman"
    truth = {"outfit_text": OUTFITS[outfit][3] + (", hat" if hat else ""), "gender": gender_word,
             "visible": [label for label in PART_FOLDERS if label not in empty], "map": map_kind,
             "webp": number % 2 == 1, "view": short_view}
    return row, truth


def _test_line_spec(number: int) -> tuple[int, str, tuple[str, ...], str]:
    """(outfit, view, empty parts, map kind) of test line `number`: outfits and views in turn, with the
    hazards of the real data among them."""
    outfit = number % len(OUTFITS)
    view = VIEWS[(number + number // len(OUTFITS)) % len(VIEWS)]
    empty = []
    if view == "3_back":
        empty.append("face")  # a face in a back view
    if OUTFITS[outfit][2][0] == "piece" and number % 4 == 0:
        empty.append("shoes")  # shoes under a long dress
    if OUTFITS[outfit][0] == "MEN" and number % 3 == 0 and outfit not in (3, 9):
        empty.append("hair or headwear")  # no hair
    if number % 7 in (0, 5):
        empty.append("shoes")  # out of the frame, or hidden
    kind = "blank" if number in BLANK_MAPS else "near-blank" if number in NEAR_BLANK_MAPS else "ok"
    return outfit, view, tuple(dict.fromkeys(empty)), kind


class _HoleWriter:
    """The file a ZIP64 archive is written to: `zipfile` cannot seek back in it (so each member streams, with
    a data descriptor), and `hole(n)` moves n bytes forward without writing them (a sparse hole)."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")

    def write(self, data) -> int:
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, *args):
        raise OSError("not seekable")

    def flush(self) -> None:
        self._file.flush()

    def hole(self, size: int) -> None:
        self._file.seek(size, os.SEEK_CUR)

    def close(self) -> None:
        self._file.truncate()
        self._file.close()


def _write_archive(path: Path, items: list[tuple[str, bytes]], size: int = 0) -> None:
    """A zip of `items` (JPEG/WebP stored, PNG deflated) about `size` bytes large: its second half starts
    past a sparse hole."""
    raw = _HoleWriter(path)
    hole = max(0, size - sum(len(payload) + 2 * len(member) + 130 for member, payload in items))
    with zipfile.ZipFile(raw, "w") as archive:
        for index, (member, payload) in enumerate(items):
            if hole and index == len(items) // 2:
                raw.hole(hole)
            archive.writestr(member, payload, compress_type=zipfile.ZIP_DEFLATED if member.endswith(".png")
                             else zipfile.ZIP_STORED)
    raw.close()


def build_standin(root: Path, samples: int = 60, seed: int = 0, filler: int = FILLER_MEMBERS) -> dict:
    """Write the stand-in into `root`; return {"samples": rows, "truth": {target_id: ...}, "train": rows,
    "archives": {name: path}}."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    folders = [*PART_FOLDERS.values(), "images", "densepose", "openpose"]
    members: dict[str, dict[str, bytes]] = {f"{folder}.zip": {} for folder in folders}
    rows, truth, train = [], {}, []
    for number in range(samples):
        row, truth[f"{number}"] = _line(number, *_test_line_spec(number), rng, members)
        truth[row["target_id"]] = truth.pop(f"{number}")
        rows.append(row)
    for offset, (outfit, view, empty, blank) in enumerate(TRAIN_LINES):
        row, about = _line(500 + offset, outfit, view, empty, "blank" if blank else "ok", rng, members)
        truth[row["target_id"]] = about
        train.append(row)
    (root / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train))
    archives = {}
    for name, content in members.items():
        items = list(content.items())
        for index in range(filler):  # filler spread around the real members, like a big folder
            items.insert(rng.randrange(len(items) + 1),
                         (f"{name[:-4]}/FILLER-{index:05d}_rgb.jpg", rng.randbytes(FILLER_BYTES)))
        _write_archive(root / name, items, REAL_ARCHIVE_BYTES.get(name, SMALLEST_REAL_ARCHIVE))
        archives[name] = root / name
    return {"samples": rows, "truth": truth, "train": train, "archives": archives}


_BUILT: dict[str, tuple[Path, dict]] = {}
_BUILT_LOCK = threading.Lock()


def standin_root() -> tuple[Path, dict]:
    """(folder, what `build_standin` returned), built once per test session in a temporary folder. Read-only:
    change a copy (`copy_standin`)."""
    with _BUILT_LOCK:
        if "default" not in _BUILT:
            folder = Path(tempfile.mkdtemp(prefix="p2w-standin-"))
            atexit.register(shutil.rmtree, folder, True)
            _BUILT["default"] = (folder / "dataset", build_standin(folder / "dataset"))
        return _BUILT["default"]


def sparse_copy(source: Path, destination: Path) -> None:
    """Copy a file keeping its holes (only the data extents are read and written)."""
    size = source.stat().st_size
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        position = 0
        while position < size:
            try:
                start = os.lseek(reader.fileno(), position, os.SEEK_DATA)
            except OSError:  # no data after `position`: the rest is a hole
                break
            end = os.lseek(reader.fileno(), start, os.SEEK_HOLE)
            reader.seek(start)
            writer.seek(start)
            writer.write(reader.read(end - start))
            position = end
        writer.truncate(size)


def copy_standin(source: Path, destination: Path, writable: tuple[str, ...] = ()) -> Path:
    """A copy of the stand-in: the files in `writable` copied (sparsely), the others hard-linked (never change
    those)."""
    destination.mkdir(parents=True)
    for path in source.iterdir():
        if path.name in writable:
            sparse_copy(path, destination / path.name)
        else:
            os.link(path, destination / path.name)
    return destination


def extract_split(source: Path, destination: Path, split: str = "train") -> Path:
    """The members a split's lines name, extracted into `destination` as the official script leaves the
    dataset (each zip unpacked as its own folder), and the split's index."""
    rows = [json.loads(line) for line in (source / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    paths = {row["target"] for row in rows}
    for row in rows:
        paths |= {*row["appearance"].values(), *row["mask"].values(), *row["structure"].values()}
    by_archive: dict[str, set[str]] = {}
    for path in paths:
        by_archive.setdefault(path.split("/", 1)[0] + ".zip", set()).add(path)
    for archive, wanted in by_archive.items():
        with zipfile.ZipFile(source / archive) as bundle:
            for member in sorted(wanted):
                bundle.extract(member, destination)
    shutil.copy(source / f"{split}.jsonl", destination / f"{split}.jsonl")
    return destination



class _CountingFile(io.RawIOBase):
    def __init__(self, fs: "CountingFileSystem", path: str):
        super().__init__()
        self._fs, self._path = fs, path
        self._file = open(path, "rb")

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._file.seek(offset, whence)

    def tell(self):
        return self._file.tell()

    def read(self, size=-1):
        start = self._file.tell()
        data = self._file.read(size)
        self._fs.record(self._path, start, start + len(data))
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        self._file.close()
        super().close()


class CountingFileSystem(LocalFileSystem):
    """A local fsspec file system that records every byte range read (no caching, no read-ahead)."""

    cachable = False  # a new instance (and new counts) each time, not fsspec's shared one

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ranges: list[tuple[str, int, int]] = []
        self._record_lock = threading.Lock()
        self.opened: list[str] = []

    def record(self, path: str, start: int, end: int) -> None:
        with self._record_lock:
            self.ranges.append((str(path), start, end))

    @property
    def bytes_read(self) -> int:
        return sum(end - start for _, start, end in self.ranges)

    def bytes_of(self, name: str) -> int:
        return sum(end - start for path, start, end in self.ranges if Path(path).name == name)

    def _open(self, path, mode="rb", block_size=None, **kwargs):
        if "r" not in mode:
            return super()._open(path, mode, block_size, **kwargs)
        path = self._strip_protocol(path)
        self.opened.append(path)
        return _CountingFile(self, path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        with self._open(path) as handle:
            if start:
                handle.seek(start)
            return handle.read(-1 if end is None else end - (start or 0))


class _RangeFile(AbstractBufferedFile):
    """Like `huggingface_hub.HfFileSystemFile`: a buffered fsspec file whose every fetch is one range request."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        self.fs.fetches.append((self.path, start, end))
        return data


class RemoteLikeFileSystem(AbstractFileSystem):
    """A local folder served the way HfFileSystem serves the Hub: files are `AbstractBufferedFile`s (read-ahead
    cache by default, as there) fetching byte ranges, each recorded in `fetches`."""

    cachable = False
    protocol = "remotelike"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetches: list[tuple[str, int, int]] = []

    def info(self, path, **kwargs):
        local = Path(path)
        if not local.is_file():
            raise FileNotFoundError(path)
        return {"name": str(local), "size": local.stat().st_size, "type": "file"}

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        return _RangeFile(self, path, mode, block_size=block_size or "default", cache_options=cache_options, **kwargs)

    @property
    def bytes_fetched(self) -> int:
        return sum(end - start for _, start, end in self.fetches)


if __name__ == "__main__":  # python tests/examples_standin.py DIR: write the stand-in (for the figure in docs/examples.md)
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "standin-dataset")
    built = build_standin(target)
    sizes = sum(path.stat().st_size for path in built["archives"].values())
    on_disk = sum(path.stat().st_blocks * 512 for path in built["archives"].values())
    print(f"stand-in dataset in {target}: {len(built['samples'])} test samples, {len(built['archives'])} zips, "
          f"{sizes / 1e9:.2f} GB of archives ({on_disk / 1e6:.1f} MB on disk)")
