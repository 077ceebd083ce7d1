"""OUT_DIR of a batch: a local folder or an fsspec URL, written atomically; and whether a line's outputs
there are complete (so a rerun skips it and rewrites nothing of it).

A line's outputs are complete when its JSON exists, parses, names this very line (its content key) and every
image it lists exists: an interrupted line has no JSON yet, so it is made again on the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

import fsspec

from ..core.errors import Parts2WholeInputError
from .manifest import ManifestLine

#: Temporary files of atomic writes; a run removes the ones an interrupted run left behind.
TEMPORARY_MARKER = ".partial-"


class OutputStore:
    """OUT_DIR: a local folder (plain files, atomic renames) or an fsspec URL (s3://, gs://, a shared mount).

    Only a location string is kept, so the store pickles to Ray actors and reopens its filesystem there.
    """

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self.is_url = "://" in self.location and not self.location.startswith("file://")
        self._fs = None

    def __getstate__(self):
        return {"location": self.location, "is_url": self.is_url, "_fs": None}

    @property
    def fs(self):
        if self._fs is None:
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as error:
                raise Parts2WholeInputError(
                    f"Cannot write to {self.location}: {error} (install the fsspec filesystem for it, "
                    "e.g. s3fs for s3://, gcsfs for gs://).") from None
        return self._fs

    def _local(self, name: str = "") -> Path:
        folder = Path(self.location.removeprefix("file://")).expanduser()
        return folder / name if name else folder

    def _remote(self, name: str) -> str:
        self.fs  # noqa: B018 - sets _root
        return f"{self._root.rstrip('/')}/{name}"

    def path(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/{name}" if self.is_url else str(self._local(name))

    def prepare(self) -> None:
        """Create OUT_DIR, check that it takes files, and remove temporary files of an interrupted run."""
        if self.is_url:
            self.fs.makedirs(self._remote(""), exist_ok=True)
            return
        folder = self._local()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise Parts2WholeInputError(f"Cannot create {folder} ({error.strerror or error}); choose another -o folder.") from None
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise Parts2WholeInputError(f"Cannot write into {folder} (not a writable folder); choose another -o folder.")
        for leftover in folder.glob(f".*{TEMPORARY_MARKER}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def exists(self, name: str) -> bool:
        if self.is_url:
            return self.fs.exists(self._remote(name))
        return self._local(name).is_file()

    def read_text(self, name: str) -> str | None:
        try:
            if self.is_url:
                return self.fs.cat_file(self._remote(name)).decode("utf-8")
            return self._local(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        """All or nothing: a reader sees the old file, or no file, or the whole new one.

        Local: a temporary file in the same folder, flushed, then renamed over the name. Object stores make
        an upload visible only once it is complete, so a URL is written directly (a shared filesystem mounted
        locally is a local path).
        """
        if self.is_url:
            self.fs.pipe_file(self._remote(name), data)
            return
        target = self._local(name)
        temporary = target.with_name(f".{target.name}{TEMPORARY_MARKER}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise


def completed_outputs(store: OutputStore, line: ManifestLine) -> tuple[str, list[str]]:
    """("complete", outputs) when this line's outputs are all there; ("missing", []) when they are not (or
    only partly: made again); ("other", outputs) when `<id>.json` was made from a different line."""
    text = store.read_text(f"{line.id}.json")
    if text is None:
        return "missing", []
    try:
        record = json.loads(text)
        outputs = [str(name) for name in record["outputs"]]
        made_from = record.get("batch", {}).get("line_key")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "missing", []  # not a JSON this batch wrote completely
    if made_from != line.key:
        return "other", outputs
    if not outputs or not all(store.exists(name) for name in outputs):
        return "missing", []
    return "complete", outputs
