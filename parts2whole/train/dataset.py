"""Reader of the DeepFashion-MultiModal-Parts2Whole layout (Hub dataset or a local folder like it).

Layout (Hub repo `huanngzh/DeepFashion-MultiModal-Parts2Whole`, one zip per folder, extracted in place):

    train.jsonl, test.jsonl     one sample per line: target_id, reference_id, target (relative path),
                                caption, appearance {label: path}, mask {label: path}, structure {kind: path}
    images/                     target photos
    face/ hair_headwear/ upper_body_clothes/ lower_body_clothes/ whole_body_clothes/ shoes/
                                the reference parts (`<id>_rgb.jpg`) and their soft masks (`<id>_mask.jpg`)
    densepose/ openpose/ segm/  structure maps of the targets
    dwpose/                     ours: OpenPose-style maps rendered from DWPose (`convert_dwpose`)

Verified from the Hub repository's file list and card and the official repo's download script, config
and loader: the zip names, the two index files and their fields, paths relative to the root, label texts
as appearance keys, and the `<id>_rgb.jpg` / `<id>_mask.jpg` / `densepose/<id>_densepose.png` naming.
Assumed: that every zip holds its folder name (images/...), and nothing about openpose/ or segm/ (unused).
Index keys may also be part folder names.

The facts this reader is built on (parts2whole.core.dataset_layout, with their sources):
- every line lists all six part labels, so a listed part is not a visible one: a part whose mask covers
  less than MIN_PART_COVERAGE (an all-black JPEG mask: a face in a back view, shoes under a dress) is
  absent (`visible_parts`), never fed to the model as an empty reference;
- part files named `.jpg` may be WebP, at odd sizes; masks are 3-channel soft JPEGs: images are decoded by
  content (PIL) and masks read as luminance by the pipeline's own preprocessing, at any size;
- a target whose DensePose map is blank (DensePose found nobody) has no pose: its item says
  `structure_present = False` and the loss drops its pose as pose dropout does; evaluation skips it.

Every sample becomes fixed-shape tensors, with one slot per official part label (in `PART_LABELS`
order) and a `present` flag, so samples with different visible parts batch together. References are
preprocessed exactly as the pipeline does at inference (`image_processing`), so training sees what
generation will feed.
"""

from __future__ import annotations

import argparse
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from preprocess.images import mask_coverage

from ..core.dataset_layout import BODY_PIXEL_LEVEL, HUB_DATASET_ID, MIN_BODY_SHARE, MIN_PART_COVERAGE, PART_FOLDERS
from ..core.labels import PART_LABELS, canonical_label
from ..model.image_processing import ClipImageSettings, clip_pixels, reference_pixels_and_mask, structure_pixels

#: Zips a DWPose/OpenPose run needs: targets, parts and the index files (not densepose/ or segm/).
TRAINING_DOWNLOAD_PATTERNS = ["*.jsonl", "images.zip", *(f"{folder}.zip" for folder in PART_FOLDERS.values())]
#: Masks below this maximum (out of 1) once resized to the training size are treated as an absent part too
#: (a visible but tiny part can vanish): the pipeline refuses empty masks.
EMPTY_MASK_THRESHOLD = 1.0 / 255.0
NUM_PART_SLOTS = len(PART_LABELS)
#: Where `data.root: huanngzh/DeepFashion-MultiModal-Parts2Whole` is downloaded to.
DEFAULT_DOWNLOAD_FOLDER = "data/DeepFashion-MultiModal-Parts2Whole"


def part_label(key: str) -> str:
    """The official label of an index key: the label text itself, an alias, or a part folder name."""
    folders = {folder: label for label, folder in PART_FOLDERS.items()}
    return folders.get(key) or canonical_label(key)


def read_index(path: str | Path, max_samples: int | None = None) -> list[dict]:
    """The samples of a jsonl index, checked for the fields the reader uses."""
    samples = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            sample = json.loads(line)
            missing = {"target", "appearance"} - sample.keys()
            if missing:
                raise ValueError(f"{path}:{line_number}: sample lacks {sorted(missing)}")
            samples.append(sample)
            if max_samples is not None and len(samples) >= max_samples:
                break
    return samples


def is_visible(mask: Image.Image | None) -> bool:
    """A part is visible unless its mask covers less than MIN_PART_COVERAGE (no mask: the image's alpha decides)."""
    return mask is None or mask_coverage(mask) >= MIN_PART_COVERAGE


def shows_a_body(structure: Image.Image) -> bool:
    """False for a blank or near-blank pose map: fewer than MIN_BODY_SHARE pixels above BODY_PIXEL_LEVEL."""
    pixels = np.asarray(structure.convert("RGB"))
    return bool(pixels.size) and float((pixels.max(axis=2) > BODY_PIXEL_LEVEL).mean()) >= MIN_BODY_SHARE


def _open_as_given(path: Path) -> Image.Image:
    """Open without mode conversion: the pipeline's preprocessing decides, as at inference."""
    image = Image.open(path)
    image.load()
    return image


def crop_box(size: tuple[int, int], aspect: float, fraction: float, rng: random.Random) -> tuple[int, int, int, int]:
    """A (left, top, right, bottom) box of `aspect` (width/height), `fraction` of the largest such box
    inside an image of `size` (width, height), at a random position."""
    width, height = size
    box_width, box_height = (width, width / aspect) if width / height < aspect else (height * aspect, height)
    box_width, box_height = box_width * fraction, box_height * fraction
    left = rng.uniform(0, width - box_width)
    top = rng.uniform(0, height - box_height)
    return round(left), round(top), round(left + box_width), round(top + box_height)


def _scaled_box(box, from_size, to_size):
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)


class PartsToWholeDataset(Dataset):
    """Samples of a Parts2Whole index as tensors (see `__getitem__`)."""

    def __init__(self, root: str | Path, jsonl: str, structure_key: str, height: int, width: int,
                 clip_settings: ClipImageSettings, min_crop_fraction: float = 1.0, max_samples: int | None = None):
        self.root = Path(root)
        index = self.root / jsonl
        if not index.is_file():
            raise FileNotFoundError(f"{index} not found: download the dataset (python -m parts2whole.train.dataset "
                                    f"--dest {self.root}) and, for DWPose maps, run parts2whole.train.convert_dwpose")
        self.samples = read_index(index, max_samples)
        self.structure_key = structure_key
        self.height, self.width = height, width
        self.clip_settings = clip_settings
        self.min_crop_fraction = min_crop_fraction
        if self.samples and not (self.root / self.samples[0]["target"]).is_file():
            raise FileNotFoundError(f"{self.root / self.samples[0]['target']} not found: paths in {jsonl} are relative to "
                                    f"{self.root}, where the zips must be extracted (images/, face/, ...)")
        for number, sample in enumerate(self.samples[:1]):
            if structure_key not in sample.get("structure", {}):
                raise KeyError(f"{index}: sample {number} has no structure map {structure_key!r} "
                               f"(has {sorted(sample.get('structure', {}))})")

    def __len__(self) -> int:
        return len(self.samples)

    def references(self, index: int) -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
        """The sample's visible parts (`is_visible`: every line lists all six) and their masks as PIL images,
        keyed by official label."""
        sample = self.samples[index]
        masks = {part_label(key): _open_as_given(self.root / path) for key, path in sample.get("mask", {}).items()}
        images = {part_label(key): _open_as_given(self.root / path) for key, path in sample["appearance"].items()
                  if is_visible(masks.get(part_label(key)))}
        return images, {label: mask for label, mask in masks.items() if label in images}

    def has_structure(self, index: int) -> bool:
        """Whether the sample's pose map shows a body (`shows_a_body`); a blank one has no pose to learn from."""
        with Image.open(self.root / self.samples[index]["structure"][self.structure_key]) as structure:
            return shows_a_body(structure)

    def target_and_structure(self, index: int, rng: random.Random | None = None) -> tuple[Image.Image, Image.Image]:
        """Target photo and its pose map, cropped identically (randomly when `rng` is given) to the
        training aspect; not yet resized."""
        sample = self.samples[index]
        target = Image.open(self.root / sample["target"]).convert("RGB")
        structure = Image.open(self.root / sample["structure"][self.structure_key]).convert("RGB")
        fraction = rng.uniform(self.min_crop_fraction, 1.0) if rng is not None else 1.0
        box = crop_box(target.size, self.width / self.height, fraction, rng or random.Random(0))
        if rng is None:  # centred
            box_width, box_height = box[2] - box[0], box[3] - box[1]
            left, top = (target.width - box_width) // 2, (target.height - box_height) // 2
            box = (left, top, left + box_width, top + box_height)
        return target.crop(box), structure.crop(_scaled_box(box, target.size, structure.size))

    def __getitem__(self, index: int) -> dict:
        """target (3,H,W) in [-1,1]; structure (3,H,W) in [0,1] and structure_present (False for a blank map);
        caption; and per part slot: reference_pixels (6,3,H,W), reference_masks (6,1,H,W), clip_pixels (6,3,c,c),
        present (6,): the visible parts."""
        rng = random.Random(torch.randint(0, 2**31 - 1, ()).item()) if self.min_crop_fraction < 1 else None
        target, structure = self.target_and_structure(index, rng)
        target_array = np.asarray(target.resize((self.width, self.height), Image.Resampling.BICUBIC), dtype=np.float32)
        crop_h, crop_w = self.clip_settings.crop_height, self.clip_settings.crop_width
        pixels = torch.zeros(NUM_PART_SLOTS, 3, self.height, self.width)
        masks = torch.zeros(NUM_PART_SLOTS, 1, self.height, self.width)
        clip = torch.zeros(NUM_PART_SLOTS, 3, crop_h, crop_w)
        present = torch.zeros(NUM_PART_SLOTS, dtype=torch.bool)
        images, given_masks = self.references(index)
        for slot, label in enumerate(PART_LABELS):
            if label not in images:
                continue
            pixel, mask = reference_pixels_and_mask(images[label], given_masks.get(label), self.height, self.width)
            if float(mask.max()) < EMPTY_MASK_THRESHOLD:
                continue
            pixels[slot], masks[slot] = pixel[0], mask[0]
            clip[slot] = clip_pixels(images[label], self.clip_settings)[0]
            present[slot] = True
        return {
            "target": torch.from_numpy(target_array / 127.5 - 1.0).permute(2, 0, 1).contiguous(),
            "structure": structure_pixels(structure, self.height, self.width)[0],
            "structure_present": torch.tensor(shows_a_body(structure)),
            "caption": self.samples[index].get("caption", ""),
            "reference_pixels": pixels,
            "reference_masks": masks,
            "clip_pixels": clip,
            "present": present,
        }


def _safe_extract(archive: Path, destination: Path) -> None:
    """Extract a zip, refusing members that would land outside `destination`."""
    destination = destination.resolve()
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            if not (destination / member).resolve().is_relative_to(destination):
                raise ValueError(f"{archive}: member {member!r} escapes the destination folder")
        bundle.extractall(destination)


def download_dataset(dest: str | Path, patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """Download the Hub dataset's zips and index files into `dest` and extract them there (skips zips
    whose folder already exists). The default patterns skip densepose/ and segm/ (6+ GB of zips)."""
    # huggingface_hub only when downloading: reading a local copy (and `--help`) stays light.
    from huggingface_hub import snapshot_download

    dest = Path(dest)
    snapshot_download(HUB_DATASET_ID, repo_type="dataset", local_dir=dest, revision=revision,
                      allow_patterns=patterns or TRAINING_DOWNLOAD_PATTERNS)
    for archive in sorted(dest.glob("*.zip")):
        if not (dest / archive.stem).is_dir():
            print(f"extracting {archive.name}")
            _safe_extract(archive, dest)
    return dest


def resolve_dataset_root(root: str | Path, download_to: str | Path = DEFAULT_DOWNLOAD_FOLDER) -> Path:
    """A local dataset folder: `root` itself, or, when `root` is the Hub dataset id, its download in
    `download_to` (fetched and extracted on first use; tens of GB)."""
    if str(root) == HUB_DATASET_ID:
        return download_dataset(download_to)
    return Path(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Download and extract {HUB_DATASET_ID}.")
    parser.add_argument("--dest", default=DEFAULT_DOWNLOAD_FOLDER)
    parser.add_argument("--all", action="store_true", help="also densepose/, openpose/ and segm/ (several GB more)")
    parser.add_argument("--revision", default=None)
    args = parser.parse_args(argv)
    download_dataset(args.dest, ["*"] if args.all else None, args.revision)


if __name__ == "__main__":
    main()
