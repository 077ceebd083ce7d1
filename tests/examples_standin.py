"""A local stand-in for `huanngzh/DeepFashion-MultiModal-Parts2Whole`, in the real layout, with tiny images.

Root files train.jsonl and test.jsonl (the real keys: target_id, reference_id, target, caption, appearance,
mask, structure), and one zip per folder with the real member naming (`face/<id>_rgb.jpg`,
`face/<id>_mask.jpg`, `densepose/<id>_densepose.png`, `images/<id>.jpg`). Each zip also holds many filler
members (random bytes, stored), so it is large next to what the fetcher should read: reading a filler
member, or the whole archive, shows up in the counted bytes.

`CountingFileSystem` is a local fsspec file system that counts every byte read (and records the ranges).
"""

from __future__ import annotations

import io
import json
import random
import threading
import zipfile
from pathlib import Path

import numpy as np
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from PIL import Image, ImageDraw

GENDER_CATEGORIES = {"WOMEN": ["Dresses", "Blouses_Shirts", "Skirts", "Tees_Tanks"], "MEN": ["Denim", "Shirts_Polos", "Pants"]}
VIEWS = ["1_front", "2_side", "3_back", "4_full", "7_additional"]
PART_FOLDERS = {"face": "face", "hair or headwear": "hair_headwear", "upper body clothes": "upper_body_clothes",
                "lower body clothes": "lower_body_clothes", "whole body clothes": "whole_body_clothes", "shoes": "shoes"}
FILLER_MEMBERS = 160
FILLER_BYTES = 24_000
IMAGE_SIZE = (48, 72)


def _jpeg(rng: random.Random, size=IMAGE_SIZE, grey: bool = False) -> bytes:
    colour = tuple(rng.randrange(40, 220) for _ in range(3))
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4),
                 fill=tuple(255 - c for c in colour))
    if grey:
        image = Image.new("RGB", size, (0, 0, 0))  # masks are 3-channel JPEGs in the dataset
        ImageDraw.Draw(image).ellipse((size[0] // 6, size[1] // 6, 5 * size[0] // 6, 5 * size[1] // 6), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


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


def build_standin(root: Path, samples: int = 40, seed: int = 0, filler: int = FILLER_MEMBERS) -> dict:
    """Write the stand-in into `root`; return {"samples": [...rows], "archives": {name: path}}."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    members: dict[str, dict[str, bytes]] = {f"{f}.zip": {} for f in [*PART_FOLDERS.values(), "images", "densepose"]}
    rows = []
    for number in range(samples):
        gender = "MEN" if number % 4 == 1 else "WOMEN"
        category = GENDER_CATEGORIES[gender][number % len(GENDER_CATEGORIES[gender])]
        person = f"id_{1000 + number // 2:08d}-0{1 + number % 2}"
        target_view = VIEWS[number % len(VIEWS)]
        reference_view = VIEWS[(number + 2) % len(VIEWS)]
        target_id = f"{gender}-{category}-{person}_{target_view}"
        reference_id = f"{gender}-{category}-{person}_{reference_view}"
        labels = ["face", "upper body clothes"]
        if category == "Dresses" or number % 7 == 3:
            labels = ["face", "whole body clothes"]
        elif number % 3 != 2:
            labels.append("lower body clothes")
        if number % 5 != 4:
            labels.append("hair or headwear")
        if number % 3 != 1:
            labels.append("shoes")
        appearance, mask = {}, {}
        for label in labels:
            folder = PART_FOLDERS[label]
            appearance[label] = f"{folder}/{reference_id}_rgb.jpg"
            mask[label] = f"{folder}/{reference_id}_mask.jpg"
            members[f"{folder}.zip"][appearance[label]] = _jpeg(rng)
            members[f"{folder}.zip"][mask[label]] = _jpeg(rng, grey=True)
        target = f"images/{target_id}.jpg"
        members["images.zip"][target] = _jpeg(rng, size=(64, 96))
        view = target_view.split("_", 1)[1]
        densepose = f"densepose/{target_id}_densepose.png"
        members["densepose.zip"][densepose] = _png(densepose_map(view if view in ("side", "back") else "front",
                                                                 arms_up=number % 6 in (0, 5), variant=number))
        rows.append({"target_id": target_id, "reference_id": reference_id, "target": target,
                     "caption": f"This person wears a {category.lower()} outfit, number {number}.",
                     "appearance": appearance, "structure": {"densepose": densepose}, "mask": mask})
    (root / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "train.jsonl").write_text(json.dumps(rows[0]) + "\n")
    archives = {}
    for name, content in members.items():
        path = root / name
        folder = name[:-4]
        with zipfile.ZipFile(path, "w") as archive:
            items = list(content.items())
            for index in range(filler):  # filler spread around the real members, like a big folder
                items.insert(rng.randrange(len(items) + 1),
                             (f"{folder}/FILLER-{index:05d}_rgb.jpg", rng.randbytes(FILLER_BYTES)))
            for member, payload in items:
                archive.writestr(member, payload, compress_type=zipfile.ZIP_STORED if member.endswith(".jpg")
                                 else zipfile.ZIP_DEFLATED)
        archives[name] = path
    return {"samples": rows, "archives": archives}


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
    print(f"stand-in dataset in {target}: {len(built['samples'])} test samples, {len(built['archives'])} zips, "
          f"{sizes / 1e6:.1f} MB of archives")
