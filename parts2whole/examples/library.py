"""The examples the app shows (`ExampleLibrary`): the cache when it is complete, else a background fetch
(never waited for) while the drawn (cartoon) examples are shown; a failed fetch is logged once and
leaves the cartoons. P2W_EXAMPLES=off (or HF_HUB_OFFLINE without a local copy): never fetch."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.weights import hub_offline
from .cache import Manifest, cache_folder, cached_manifest
from .fetch import fetch_examples
from .provenance import register_manifest
from .selection import DEFAULT_EXAMPLE_COUNT, DEFAULT_POSE_COUNT
from .source import DATASET_ID, DATASET_REVISION, EXAMPLES_SOURCE_ENV, default_file_system

logger = logging.getLogger("parts2whole.examples")

#: P2W_EXAMPLES=off: never fetch (the cartoon examples only).
EXAMPLES_ENV = "P2W_EXAMPLES"

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
    """Why the photo examples are not fetched (one phrase), or None when they may be."""
    if os.environ.get(EXAMPLES_ENV, "").lower() in {"0", "off", "false", "no"}:
        return f"{EXAMPLES_ENV}={os.environ[EXAMPLES_ENV]}"
    if os.environ.get(EXAMPLES_SOURCE_ENV):
        return None  # a local copy: no network needed
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    return None
