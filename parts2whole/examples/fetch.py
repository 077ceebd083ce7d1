"""Fetching the selection into the cache, step by step: read the index, select, range-read the wanted zip
members, check and stage them (examples with their cards, poses with their thumbnails), then publish the
staged files and the manifest. One process at a time per cache folder (a file lock); a complete cache is
reused without touching the dataset."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from PIL import Image

from preprocess.images import load_image, pixel_hash

from .cache import ExampleRecord, Manifest, PoseRecord, cache_folder, cached_manifest, publish, safe_name
from .cards import example_card, example_title, pose_thumbnail
from .index import TEST_INDEX, Sample, index_samples, read_index
from .poses import PoseDescriptor, describe_densepose
from .selection import DEFAULT_EXAMPLE_COUNT, DEFAULT_POSE_COUNT, choose, spread_poses, wanted_members
from .source import DATASET_ID, DATASET_REVISION, ExampleFetchError, hub_file_system
from .transfer import transfer_report
from .zips import ByteCounter, MemberReads, decode_image, read_members

STAGING_NAME = ".staging"


def fetch_examples(fs=None, root: str | None = None, *, revision: str = DATASET_REVISION,
                   count: int = DEFAULT_EXAMPLE_COUNT, poses: int = DEFAULT_POSE_COUNT,
                   cache_root: Path | None = None, progress: Callable[[str], None] | None = None) -> Manifest:
    """Fetch the selection into the cache and return its manifest (reused when already complete).

    `fs`/`root`: an fsspec file system and the dataset's root on it (default: the Hub dataset at
    `revision` through HfFileSystem). Raises ExampleFetchError when nothing usable could be read; damaged
    or missing members drop the example (or pose) they belong to, with a note in the manifest.
    """
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
    """The steps of a fetch into `folder` (locked): index, selection, range reads, staging, publishing."""
    counter = ByteCounter()
    started = time.perf_counter()
    index_bytes = read_index(fs, root)
    counter.add(TEST_INDEX, len(index_bytes))
    samples, notes = index_samples(index_bytes)
    chosen, candidates = choose(samples, count, pose_count)
    progress(f"{len(samples)} test samples; reading {len(chosen)} examples and {len(candidates)} pose maps")
    reads = read_members(fs, root, wanted_members(chosen, candidates), counter, progress)

    staging = _Staging(folder / STAGING_NAME, reads)
    examples = _stage_examples(staging, chosen, notes)
    pose_records = _stage_poses(staging, candidates, pose_count, notes)
    if not examples and not pose_records:
        shutil.rmtree(staging.folder, ignore_errors=True)
        reasons = "; ".join(notes[:3]) or "nothing could be read"
        raise ExampleFetchError(f"no example could be read from the dataset: {reasons}")

    transfer = transfer_report(counter, reads.sizes, len(index_bytes), len(examples), len(pose_records),
                               time.perf_counter() - started, reads.directories)
    manifest = Manifest(DATASET_ID, revision, folder, examples, pose_records, transfer, notes,
                        fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        requested={"examples": count, "poses": pose_count})
    publish(staging.folder, folder, manifest)
    return manifest


class _Staging:
    """The staging folder of a fetch (emptied first): checked members are written here, then published."""

    def __init__(self, folder: Path, reads: MemberReads):
        self.folder, self.reads = folder, reads
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "poses").mkdir(parents=True)

    def write(self, relative: str, path: str, what: str) -> Image.Image:
        """Decode dataset member `path` (ValueError when it is missing or damaged), then write its bytes
        unchanged to `relative`; returns the decoded image."""
        payload = self.reads.member_bytes(path)
        image = decode_image(payload, what)
        (self.folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.folder / relative).write_bytes(payload)
        return image

    def pixel_hash(self, relative: str) -> str:
        """The hash the app computes for this file once loaded (see parts2whole.examples.provenance)."""
        return pixel_hash(load_image(str(self.folder / relative)))


def _suffix(path: str, default: str) -> str:
    return Path(path).suffix.lower() or default


def _stage_examples(staging: _Staging, chosen: list[Sample], notes: list[str]) -> list[ExampleRecord]:
    """The chosen samples staged as examples; one that cannot be (a member missing or damaged) is left out
    with a note."""
    examples: list[ExampleRecord] = []
    for sample in chosen:
        try:
            examples.append(_stage_example(staging, sample))
        except (ValueError, OSError) as error:
            notes.append(f"example {sample.target_id} skipped: {error}")
            shutil.rmtree(staging.folder / safe_name(sample.target_id), ignore_errors=True)
    return examples


def _stage_example(staging: _Staging, sample: Sample) -> ExampleRecord:
    """One example under `<slug>/`: part photos and masks, the pose map, the real photo, the card."""
    slug = safe_name(sample.target_id)
    parts, masks, hashes, tiles = {}, {}, {}, []
    for label in sample.usable_labels:
        key = label.replace(" ", "_")
        parts[label] = f"{slug}/{key}{_suffix(sample.parts[label], '.jpg')}"
        masks[label] = f"{slug}/{key}_mask{_suffix(sample.masks[label], '.jpg')}"
        tiles.append(staging.write(parts[label], sample.parts[label], f"{label} photo of {sample.target_id}"))
        staging.write(masks[label], sample.masks[label], f"{label} mask of {sample.target_id}")
    pose_path = f"{slug}/pose{_suffix(sample.densepose, '.png')}"
    target_path = f"{slug}/target{_suffix(sample.target, '.jpg')}"
    pose_image = staging.write(pose_path, sample.densepose, f"DensePose map of {sample.target_id}")
    target_image = staging.write(target_path, sample.target, f"photo of {sample.target_id}")
    for relative in [*parts.values(), pose_path]:
        hashes[relative] = staging.pixel_hash(relative)
    card = f"{slug}/card.jpg"
    example_card(target_image, pose_image, tiles).save(staging.folder / card, quality=90)
    attributes = sample.attributes
    return ExampleRecord(sample.target_id, sample.reference_id, example_title(attributes), sample.caption,
                         parts, masks, pose_path, target_path, card, attributes, hashes)


def _stage_poses(staging: _Staging, candidates: list[Sample], pose_count: int, notes: list[str]) -> list[PoseRecord]:
    """The gallery's poses: every candidate map that decodes is described, `spread_poses` picks
    `pose_count` of them, each staged under poses/ with a thumbnail."""
    described: list[tuple[Sample, PoseDescriptor]] = []
    pose_images: dict[str, tuple[bytes, Image.Image]] = {}
    for sample in candidates:
        try:
            payload = staging.reads.member_bytes(sample.densepose)
            image = decode_image(payload, f"DensePose map of {sample.target_id}")
        except ValueError as error:
            notes.append(f"pose {sample.target_id} skipped: {error}")
            continue
        pose_images[sample.target_id] = (payload, image)
        described.append((sample, describe_densepose(image)))
    records = []
    for sample, descriptor in spread_poses(described, pose_count):
        payload, image = pose_images[sample.target_id]
        slug = safe_name(sample.target_id)
        relative, thumb = f"poses/{slug}{_suffix(sample.densepose, '.png')}", f"poses/{slug}_thumb.png"
        (staging.folder / relative).write_bytes(payload)
        pose_thumbnail(image).save(staging.folder / thumb)
        records.append(PoseRecord(sample.target_id, relative, thumb, descriptor.facing, descriptor.arms,
                                  sample.attributes["view"], staging.pixel_hash(relative)))
    return records
