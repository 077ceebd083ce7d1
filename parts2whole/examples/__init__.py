"""Real examples and a DensePose pose gallery from the test split of the Parts2Whole dataset.

What it fetches: a fixed, deterministic selection of test samples of the Hub dataset
`huanngzh/DeepFashion-MultiModal-Parts2Whole` (pinned to DATASET_REVISION; `revision=` overrides): for each,
the reference part photos and their soft masks, the DensePose map of the target, the caption (the prompt)
and the real target photo (the ground truth, shown as "the real person", never as a result); plus the
DensePose maps of about 24 other test targets as a pose gallery.

Data flow (no UI code here: the app and the CLI read an `ExampleLibrary` / a `Manifest`):

    test.jsonl --(whole file, a few MB)--> samples --example_candidates (captions, ids)--> ~3x candidates
    candidates' masks + DensePose maps --checks (visible parts, blank map, damage)--> select_examples --> the
        visible parts' photos + real photos (a damaged one: named, replaced by a spare); then pose_candidates
    <folder>.zip --(range reads: the zip's tail, its central directory, then each wanted member)--> bytes
    bytes --checked (CRC by zipfile, decoded by PIL)--> cache folder (files + manifest.json, written last)
    manifest.json --> ExampleLibrary (what the app shows; the cartoon examples when there is none)

Modules, one job each:
    source      the dataset id and pinned revision, the file systems (Hub, local copy), ExampleFetchError
    index       test.jsonl: its lines as `Sample`s
    outfit      what a caption and an id say: gender, view, the outfit (one piece or top + bottom), headwear
    zips        range reads of zip members, every byte counted; the archives kept open across rounds
    poses       what a DensePose map shows (facing, arms)
    checks      what a candidate's masks and map show: visible parts, a blank map, damage
    selection   which candidates, which examples, which pose candidates, which poses, which members to read
    cache       the cache folder and its manifest (complete or ignored; written last)
    cards       the example cards, titles and pose thumbnails the gallery shows
    fetch       the fetch itself, step by step, under a file lock
    transfer    the bytes report
    provenance  tracing a picture back to its dataset sample (and the dataset's mask of a part)
    library     `ExampleLibrary`: what the app shows now, the background fetch

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
  e.g. "MEN-Denim-id_00000265-01_1_front" (views: front, side, back, full, additional, flat);
- every line lists all six part labels, "whole body clothes" (the crop of the whole outfit) included, so
  the outfit comes from the caption and the id (outfit), and what is visible from the masks (checks);
- part files named `.jpg` are JPEG or WebP at odd sizes, masks 3-channel soft JPEGs, and four archives are
  over 4 GiB (ZIP64). parts2whole.core.dataset_layout lists these facts with their sources.
Assumed (not checkable offline; each is one named constant or one fallback): that each zip holds its
folder name as a prefix (a member is also found by its file name alone, MEMBER_LOOKUP_BY_NAME); that the
pinned revision DATASET_REVISION (the latest commit of `main`, "Update README.md", when this was written)
stays available; that the DensePose maps are IUV images with the part index in the blue channel (as the
project's shared DensePose notes establish from the released maps); that a part not visible has an
all-black mask and a photo without a person a blank map (both handled: never offered, see checks).

Environment: P2W_EXAMPLES_DIR (the cache folder's root, default `<weights dir>/examples`),
P2W_EXAMPLES=off (never fetch: the cartoon examples only), P2W_EXAMPLES_SOURCE=DIR (read a local copy of
the dataset instead of the Hub).
"""

from __future__ import annotations

from .cache import (CACHE_SUBDIR, EXAMPLES_DIR_ENV, MANIFEST_NAME, MANIFEST_VERSION, ExampleRecord, Manifest,
                    PoseRecord, cache_folder, cached_manifest, default_cache_root, load_manifest)
from .cards import (CARD_HEIGHT, GROUND_TRUTH_BAND, POSE_THUMB_HEIGHT, REAL_PERSON_LABEL, REAL_PERSON_SUBLABEL,
                    example_card, example_title)
from .fetch import fetch_examples
from .index import DENSEPOSE_KEY, TARGET_FOLDER, TEST_INDEX, Sample, parse_index
from .library import (EXAMPLES_ENV, STATE_CACHED, STATE_FAILED, STATE_FETCHING, STATE_OFFLINE, ExampleLibrary,
                      Snapshot)
from .poses import ARMS_RAISED_LEVEL, SIDE_BALANCE, PoseDescriptor, describe_densepose
from .provenance import dataset_mask_path, dataset_source, register_manifest
from .checks import MIN_VISIBLE_PARTS, CandidateCheck, body_share, check_candidate, is_blank_map
from .outfit import Outfit, describe_id, describe_outfit
from .selection import (DEFAULT_EXAMPLE_COUNT, DEFAULT_POSE_COUNT, EXAMPLE_CANDIDATE_FACTOR, EXAMPLE_PROFILES,
                        POSE_CANDIDATE_FACTOR, POSE_GROUPS, POSE_VIEWS, example_candidates, pose_candidates,
                        select_examples, spread_poses)
from .source import (DATASET_ID, DATASET_LICENSE, DATASET_REVISION, EXAMPLES_SOURCE_ENV, ExampleFetchError,
                     default_file_system, hub_file_system, local_file_system)
from .transfer import format_transfer, transfer_report
from .zips import (ARCHIVE_SUFFIX, LOCAL_HEADER_SLACK, MAX_MEMBER_BYTES, MEMBER_LOOKUP_BY_NAME, TAIL_BYTES,
                   ArchiveReader, ArchiveSet, ByteCounter, RangeReader, TransferError, archive_of, decode_image)

__all__ = [
    "ARCHIVE_SUFFIX", "ARMS_RAISED_LEVEL", "ArchiveReader", "ArchiveSet", "CandidateCheck", "EXAMPLE_CANDIDATE_FACTOR",
    "MIN_VISIBLE_PARTS", "Outfit", "body_share", "check_candidate", "describe_id", "describe_outfit",
    "example_candidates", "is_blank_map", "ByteCounter", "CACHE_SUBDIR", "CARD_HEIGHT",
    "DATASET_ID", "DATASET_LICENSE", "DATASET_REVISION", "DEFAULT_EXAMPLE_COUNT", "DEFAULT_POSE_COUNT",
    "DENSEPOSE_KEY", "EXAMPLES_DIR_ENV", "EXAMPLES_ENV", "EXAMPLES_SOURCE_ENV", "EXAMPLE_PROFILES",
    "ExampleFetchError", "ExampleLibrary", "ExampleRecord", "GROUND_TRUTH_BAND", "LOCAL_HEADER_SLACK",
    "MANIFEST_NAME", "MANIFEST_VERSION", "MAX_MEMBER_BYTES", "MEMBER_LOOKUP_BY_NAME", "Manifest",
    "POSE_CANDIDATE_FACTOR", "POSE_GROUPS", "POSE_THUMB_HEIGHT", "POSE_VIEWS", "PoseDescriptor", "PoseRecord",
    "REAL_PERSON_LABEL", "REAL_PERSON_SUBLABEL", "RangeReader", "SIDE_BALANCE", "STATE_CACHED", "STATE_FAILED",
    "STATE_FETCHING", "STATE_OFFLINE", "Sample", "Snapshot", "TAIL_BYTES", "TARGET_FOLDER", "TEST_INDEX",
    "TransferError", "archive_of", "cache_folder", "cached_manifest", "dataset_mask_path", "dataset_source",
    "decode_image", "default_cache_root", "default_file_system", "describe_densepose", "example_card",
    "example_title", "fetch_examples", "format_transfer", "hub_file_system", "load_manifest", "local_file_system",
    "parse_index", "pose_candidates", "register_manifest", "select_examples", "spread_poses", "transfer_report",
]
