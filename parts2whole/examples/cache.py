"""The cache folder of a dataset revision, `<weights dir>/examples/<revision>/` (or P2W_EXAMPLES_DIR), and
its manifest.json: the records of the fetched examples and poses, read back only when every file is there,
written last (atomically) when a fetch publishes its staged files."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..core.weights import weights_dir
from .source import DATASET_REVISION

logger = logging.getLogger("parts2whole.examples")

#: Where the cache lives: `<weights dir>/examples/<revision>/` (see parts2whole.core.weights.weights_dir),
#: unless P2W_EXAMPLES_DIR names the folder.
CACHE_SUBDIR = "examples"
EXAMPLES_DIR_ENV = "P2W_EXAMPLES_DIR"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


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
    return weights_dir() / CACHE_SUBDIR


def cache_folder(revision: str = DATASET_REVISION, root: Path | None = None) -> Path:
    return Path(root if root is not None else default_cache_root()) / safe_name(revision)


def safe_name(text: str) -> str:
    """`text` as a file name (a revision, a sample id): letters, digits, `._-`, at most 120 characters."""
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


def publish(staging: Path, folder: Path, manifest: Manifest) -> None:
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

