"""Fetching the selection into the cache, step by step: read the index; pick example candidates (about
EXAMPLE_CANDIDATE_FACTOR per example) and range-read their masks and DensePose maps; choose the examples by
what the captions, ids and masks say; read their visible parts' photos and real photos (a candidate whose
members are damaged is named and replaced by a spare); read pose candidates' maps (blank ones skipped, more
read when too few are left); stage them (examples with their cards, poses with their thumbnails); then
publish the staged files and the manifest, with one note saying how many were skipped and why. One process at a time per cache folder (a file lock); a complete cache is
reused without touching the dataset."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from PIL import Image

from preprocess.images import load_image, pixel_hash

from ..core.dataset_layout import PART_FOLDERS
from ..core.labels import PART_LABELS
from .cache import ExampleRecord, Manifest, PoseRecord, cache_folder, cached_manifest, publish, safe_name
from .cards import example_card, example_title, pose_thumbnail
from .checks import MIN_VISIBLE_PARTS, CandidateCheck, check_candidate, is_blank_map
from .index import TEST_INDEX, Sample, index_samples, read_index
from .poses import PoseDescriptor, describe_densepose
from .selection import (DEFAULT_EXAMPLE_COUNT, DEFAULT_POSE_COUNT, POSE_CANDIDATE_FACTOR, example_candidates,
                        pose_candidates, select_examples, spread_poses, wanted_checks, wanted_maps, wanted_parts)
from .source import DATASET_ID, DATASET_REVISION, ExampleFetchError, hub_file_system
from .transfer import transfer_report
from .zips import ARCHIVE_SUFFIX, ArchiveSet, ByteCounter, MemberReads, decode_image

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
    """The steps of a fetch into `folder` (locked): index, candidates' masks and maps, examples (spares
    replacing what cannot be offered), poses, staging, publishing."""
    counter = ByteCounter()
    started = time.perf_counter()
    index_bytes = read_index(fs, root)
    counter.add(TEST_INDEX, len(index_bytes))
    samples, notes = index_samples(index_bytes)
    archives = ArchiveSet(fs, root, counter, progress)
    skipped = Skipped()
    try:
        staging = _Staging(folder / STAGING_NAME, archives.reads)
        examples = _fetch_examples(archives, staging, samples, count, skipped, notes, progress)
        pose_records = _fetch_poses(archives, staging, samples, {e.sample_id for e in examples}, pose_count,
                                    skipped, notes, progress)
    finally:
        archives.close()
    if skipped:
        notes.append(skipped.line())
    if not examples and not pose_records:
        shutil.rmtree(staging.folder, ignore_errors=True)
        reasons = "; ".join(notes[:3]) or "nothing could be read"
        raise ExampleFetchError(f"no example could be read from the dataset: {reasons}")

    reads = archives.reads
    transfer = transfer_report(counter, reads.sizes, len(index_bytes), len(examples), len(pose_records),
                               time.perf_counter() - started, reads.directories)
    manifest = Manifest(DATASET_ID, revision, folder, examples, pose_records, transfer, notes,
                        fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        requested={"examples": count, "poses": pose_count})
    publish(staging.folder, folder, manifest)
    return manifest


class Skipped:
    """What was left out and why, counted, for the one summary note of a fetch."""

    REASONS = {"damaged": "a damaged or missing member", "blank map": "a blank DensePose map",
               "too few parts": f"fewer than {MIN_VISIBLE_PARTS} visible parts"}

    def __init__(self):
        self.examples: dict[str, int] = {}
        self.poses: dict[str, int] = {}
        self.checked = {"examples": 0, "poses": 0}
        self.empty_parts = 0

    def __bool__(self) -> bool:
        return bool(self.examples or self.poses or self.empty_parts)

    def line(self) -> str:
        def part(what: str, counts: dict[str, int]) -> str:
            reasons = ", ".join(f"{n} with {self.REASONS[kind]}" for kind, n in sorted(counts.items()))
            return f"{sum(counts.values())} of {self.checked[what]} {what[:-1]} candidates ({reasons})"

        pieces = [part(what, counts) for what, counts in (("examples", self.examples), ("poses", self.poses))
                  if counts]
        line = f"skipped {' and '.join(pieces)}" if pieces else "skipped no candidate"
        return line + (f"; {self.empty_parts} parts with an empty mask were not offered" if self.empty_parts else "")


def _fetch_examples(archives: ArchiveSet, staging: _Staging, samples: list[Sample], count: int, skipped: Skipped,
                    notes: list[str], progress: Callable[[str], None]) -> list[ExampleRecord]:
    """Read the candidates' masks and maps, then stage the chosen examples; one whose photos cannot be read
    is named in the notes and replaced by the best spare, until `count` are staged or no spare is left."""
    candidates = example_candidates(samples, count)
    progress(f"{len(samples)} test samples; checking the masks and maps of {len(candidates)} example candidates")
    reads = archives.read(wanted_checks(candidates))
    unusable = archives.unusable
    notes += [f"{reason}: its part is not offered" for archive, reason in sorted(unusable.items())
              if archive[:-len(ARCHIVE_SUFFIX)] in PART_FOLDERS.values()]
    checks = {sample.target_id: check_candidate(sample, reads, unusable) for sample in candidates}
    skipped.checked["examples"] = len(candidates)
    for sample in candidates:
        check = checks[sample.target_id]
        if check.problem:
            skipped.examples[check.problem_kind] = skipped.examples.get(check.problem_kind, 0) + 1
            if check.problem_kind == "damaged":
                notes.append(f"example {sample.target_id} skipped: {check.problem}")
    good = [sample for sample in candidates if not checks[sample.target_id].problem]
    seen = {target: check.attributes() for target, check in checks.items()}
    staged: dict[str, ExampleRecord] = {}
    failed: set[str] = set()
    for _ in range(len(good) + 1):
        kept = [sample for sample in good if sample.target_id in staged]
        chosen = select_examples([s for s in good if s.target_id not in failed], count, seen, keep=kept)
        new = [sample for sample in chosen if sample.target_id not in staged]
        if not new:
            break
        archives.read(wanted_parts(new, {s.target_id: checks[s.target_id].visible for s in new}))
        for sample in new:
            try:
                staged[sample.target_id] = _stage_example(staging, sample, checks[sample.target_id])
            except (ValueError, OSError) as error:
                notes.append(f"example {sample.target_id} skipped: {error}")
                skipped.examples["damaged"] = skipped.examples.get("damaged", 0) + 1
                failed.add(sample.target_id)
                shutil.rmtree(staging.folder / safe_name(sample.target_id), ignore_errors=True)
    skipped.empty_parts = sum(len(checks[target].empty) for target in staged)
    return list(staged.values())


class _Staging:
    """The staging folder of a fetch (emptied first): checked members are written here, then published."""

    def __init__(self, folder: Path, reads: MemberReads):
        self.folder, self.reads = folder, reads
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "poses").mkdir(parents=True)

    def write(self, stem: str, path: str, what: str) -> tuple[str, Image.Image]:
        """Decode dataset member `path` (ValueError when it is missing or damaged), then write its bytes
        unchanged to `stem` + the suffix of what it really is (a WebP named .jpg becomes .webp); returns
        (the relative path written, the decoded image)."""
        payload = self.reads.member_bytes(path)
        image = decode_image(payload, what)
        relative = stem + FORMAT_SUFFIXES.get(image.format or "", Path(path).suffix.lower() or ".png")
        (self.folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.folder / relative).write_bytes(payload)
        return relative, image

    def pixel_hash(self, relative: str) -> str:
        """The hash the app computes for this file once loaded (see parts2whole.examples.provenance)."""
        return pixel_hash(load_image(str(self.folder / relative)))


#: Suffix of a staged file by the format its bytes really are (the dataset names JPEG and WebP files `.jpg`).
FORMAT_SUFFIXES = {"JPEG": ".jpg", "WEBP": ".webp", "PNG": ".png"}


def _stage_example(staging: _Staging, sample: Sample, check: CandidateCheck) -> ExampleRecord:
    """One example under `<slug>/`: the visible parts' photos and masks, the pose map, the real photo, the card."""
    slug = safe_name(sample.target_id)
    parts, masks, hashes, tiles = {}, {}, {}, []
    for label in [label for label in PART_LABELS if label in check.visible]:
        key = label.replace(" ", "_")
        parts[label], tile = staging.write(f"{slug}/{key}", sample.parts[label], f"{label} photo of {sample.target_id}")
        masks[label], _ = staging.write(f"{slug}/{key}_mask", sample.masks[label], f"{label} mask of {sample.target_id}")
        tiles.append(tile)
    pose_path, pose_image = staging.write(f"{slug}/pose", sample.densepose, f"DensePose map of {sample.target_id}")
    target_path, target_image = staging.write(f"{slug}/target", sample.target, f"photo of {sample.target_id}")
    for relative in [*parts.values(), pose_path]:
        hashes[relative] = staging.pixel_hash(relative)
    card = f"{slug}/card.jpg"
    example_card(target_image, pose_image, tiles).save(staging.folder / card, quality=90)
    attributes = {**sample.attributes, **check.attributes()}
    return ExampleRecord(sample.target_id, sample.reference_id, example_title(attributes), sample.caption,
                         parts, masks, pose_path, target_path, card, attributes, hashes)


#: Rounds of pose candidates: when blank or damaged maps leave too few, more candidates are read.
POSE_ROUNDS = 3


def _fetch_poses(archives: ArchiveSet, staging: _Staging, samples: list[Sample], exclude: set[str], pose_count: int,
                 skipped: Skipped, notes: list[str], progress: Callable[[str], None]) -> list[PoseRecord]:
    """The gallery's poses: candidate maps (none of them an example's target) are read, blank or damaged
    ones skipped (more are read when too few are left), the rest described; `spread_poses` picks
    `pose_count` of them, each staged under poses/ with a thumbnail."""
    described: list[tuple[Sample, PoseDescriptor]] = []
    pose_images: dict[str, tuple[bytes, Image.Image]] = {}
    tried = set(exclude)
    for round_number in range(POSE_ROUNDS):
        deficit = pose_count - len(described)
        wanted = round(pose_count * POSE_CANDIDATE_FACTOR) if round_number == 0 else 2 * deficit
        candidates = pose_candidates(samples, max(deficit, wanted), exclude=tried) if deficit > 0 else []
        if not candidates:
            break
        progress(f"reading {len(candidates)} pose maps")
        tried |= {sample.target_id for sample in candidates}
        skipped.checked["poses"] += len(candidates)
        reads = archives.read(wanted_maps(candidates))
        for sample in candidates:
            try:
                payload = reads.member_bytes(sample.densepose)
                image = decode_image(payload, f"DensePose map of {sample.target_id}")
            except (ValueError, KeyError) as error:
                notes.append(f"pose {sample.target_id} skipped: {str(error).strip(chr(39))}")
                skipped.poses["damaged"] = skipped.poses.get("damaged", 0) + 1
                continue
            if is_blank_map(image):
                skipped.poses["blank map"] = skipped.poses.get("blank map", 0) + 1
                continue
            pose_images[sample.target_id] = (payload, image)
            described.append((sample, describe_densepose(image)))
    records = []
    for sample, descriptor in spread_poses(described, pose_count):
        payload, image = pose_images[sample.target_id]
        slug = safe_name(sample.target_id)
        relative = f"poses/{slug}{FORMAT_SUFFIXES.get(image.format or '', '.png')}"
        thumb = f"poses/{slug}_thumb.png"
        (staging.folder / relative).write_bytes(payload)
        pose_thumbnail(image).save(staging.folder / thumb)
        records.append(PoseRecord(sample.target_id, relative, thumb, descriptor.facing, descriptor.arms,
                                  sample.attributes["view"], staging.pixel_hash(relative)))
    return records
