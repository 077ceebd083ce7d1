"""Each upload decoded once per user: the decoded file in each input, kept in that user's `gr.State`.

One picture goes through many events: its preview, the automatic mask, every click, undo, Generate and
the strip of inputs used. Each gets the file's path (uploads reach the handlers undecoded, see
`launch.pass_uploads_undecoded`); `Uploads` decodes it on the first read, with the checks of
`preprocess.images`, and hands the same image to the rest. It holds one entry per input (the face
picture, the face mask, the pose map...): a new file in an input replaces that input's entry, so a session
keeps at most one decoded file per input. Handlers never change an image they get (they draw on copies).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from PIL import Image

from parts2whole.core.labels import UI_SLOT_NAMES
from preprocess.images import LoadedMask, load_image, load_mask

#: The role of the Pose slot's map, and of a photo given to make one.
POSE = "pose"
POSE_PHOTO = "pose photo"


def file_path(upload) -> str | None:
    """The path of an uploaded file, as Gradio hands it over (a path, a temp file or a file dict)."""
    if not upload:
        return None
    if isinstance(upload, (str, os.PathLike)):
        return os.fspath(upload)
    return getattr(upload, "name", None) or (upload.get("path") if isinstance(upload, dict) else None)


def _file_key(path: str, extra: tuple) -> tuple | None:
    """What identifies the file's content: its path and size (None: unreadable, so never kept; the loader
    then says what is wrong). Gradio keeps each upload in a folder named after the hash of its bytes, so
    a path names one content; the same picture sent again lands on the same path (with a new mtime)."""
    try:
        size = os.stat(path).st_size
    except (OSError, TypeError, ValueError):
        return None
    return (os.fspath(path), size, *extra)


class Uploads:
    """The decoded files of one user's inputs (one per session, in its gr.State; never shared)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple, Any]] = {}
        self._lock = threading.Lock()  # one user's events may run at once (two slots' automatic masks)

    def __deepcopy__(self, memo) -> Uploads:
        return Uploads()  # gr.State copies its initial value for each session: every session starts empty

    @classmethod
    def of(cls, value: Uploads | None) -> Uploads:
        """The session's store; a throwaway one when a handler is called without it (scripts, tests)."""
        return value if isinstance(value, Uploads) else cls()

    def image(self, role: str, path: str, *, what: str) -> Image.Image:
        """The picture at `path` (RGB, or RGBA with real transparency), decoded once."""
        return self._decoded(role, path, (), lambda: load_image(path, what=what))

    def mask(self, role: str, path: str, size: tuple[int, int], *, what: str = "mask") -> LoadedMask:
        """The mask at `path` fitted to `size` (with a note when it had to be fitted), decoded once."""
        return self._decoded(role, path, (tuple(size),), lambda: load_mask(path, size, what=what))

    def reference(self, label: str, path: str | None) -> Image.Image | None:
        """A part slot's picture, or None when the slot is empty."""
        return self.image(label, path, what=f"{UI_SLOT_NAMES[label].lower()} image") if path else None

    def reference_mask(self, label: str, path: str, size: tuple[int, int]) -> LoadedMask:
        return self.mask(f"{label} mask", path, size, what=f"{UI_SLOT_NAMES[label].lower()} mask")

    def _decoded(self, role: str, path: str, extra: tuple, decode: Callable[[], Any]) -> Any:
        key = _file_key(path, extra)
        with self._lock:
            entry = self._entries.get(role)
        if key is not None and entry is not None and entry[0] == key:
            return entry[1]
        value = decode()  # outside the lock: another input of this user need not wait
        if key is not None:
            with self._lock:
                self._entries[role] = (key, value)
        return value
