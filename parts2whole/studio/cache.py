"""The reference cache: encodings kept across generations, ONE ENTRY PER REFERENCE, keyed by the content
of what it encodes (model, size, fusion set, label, image pixels, mask pixels), bounded by the bytes of
their tensors.

Each reference's recorded features are independent of the others' (the reference UNet sees each batch
row alone, and its CLIP token is its own), so `encode_with_cache` encodes only the references missing
from the cache, in one batched call, splits the result (`ReferenceEncoding.split`), caches each, and
assembles the set in the request's order (`ReferenceEncoding.combine`). A generation or an edit that
swaps one part encodes that part only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from PIL import Image

from ..model.validation import CheckedReferences

#: Reference encodings kept across generations (bytes of tensors, all entries together).
DEFAULT_CACHE_BYTES = 512 * 1024**2


def _tensor_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes held by the tensors inside an encoding (dataclass, mapping, sequence or plain object)."""
    import torch  # heavy: importing the studio (and `--help`) stays light

    if seen is None and isinstance(getattr(value, "nbytes", None), int):
        return value.nbytes  # the pipeline's ReferenceEncoding knows its own size
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(_tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return sum(_tensor_bytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_tensor_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sum(_tensor_bytes(v, seen) for v in vars(value).values())
    return 0


class ReferenceCache:
    """Least-recently-used reference encodings, bounded by the bytes of their tensors.

    Keys are content hashes (see `reference_key`), so two sessions share an entry only when they sent
    exactly the same images, masks and settings to the same model: nothing of one user leaks to another.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, encoding: Any) -> None:
        size = _tensor_bytes(encoding)
        with self._lock:
            self._entries.pop(key, None)
            if size > self.max_bytes:
                return  # bigger than the whole budget: not worth evicting everything for it
            self._entries[key] = (encoding, size)
            total = sum(s for _, s in self._entries.values())
            while total > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                total -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _image_digest(hasher, image: Image.Image | None) -> None:
    if image is None:
        hasher.update(b"<none>")
        return
    hasher.update(f"{image.mode}:{image.size}".encode())
    hasher.update(image.tobytes())


def part_key(model_identity: str, height: int, width: int, fusion_blocks: str, label: str, image: Image.Image,
             mask: Image.Image | None) -> str:
    """A content hash of what one reference's encoding depends on."""
    hasher = hashlib.sha256()
    hasher.update(f"{model_identity}|{height}x{width}|{fusion_blocks}|{label}|".encode())
    _image_digest(hasher, image)
    _image_digest(hasher, mask)
    return hasher.hexdigest()


def reference_key(model_identity: str, request) -> str:
    """A content hash of a validated request's whole reference set (its parts' keys, in order)."""
    return _set_key([part_key(model_identity, request.height, request.width, request.fusion_blocks, label, image,
                              request.masks.get(label)) for label, image in request.references.items()])


def _set_key(part_keys) -> str:
    return hashlib.sha256("|".join(part_keys).encode()).hexdigest()


def encode_with_cache(cache: ReferenceCache, model_identity: str, pipe, references: CheckedReferences, height: int,
                      width: int, fusion_blocks: str) -> tuple[Any, tuple[str, ...]]:
    """(the encoding of `references`, the labels encoded now): cached references are reused, the others are
    encoded in one `pipe.encode_checked` call and cached one by one (`ReferenceEncoding.split`/`combine`)."""
    keys = {label: part_key(model_identity, height, width, fusion_blocks, label, image, references.masks.get(label))
            for label, image in references.images.items()}
    found = {label: cache.get(key) for label, key in keys.items()}
    missing = tuple(label for label, entry in found.items() if entry is None)
    if missing:
        subset = CheckedReferences({label: references.images[label] for label in missing},
                                   {label: references.masks[label] for label in missing if label in references.masks})
        encoded = pipe.encode_checked(subset, height, width, fusion_blocks)
        for label, single in zip(missing, encoded.split()):
            cache.put(keys[label], single)
            found[label] = single
    parts = [found[label] for label in keys]
    return (parts[0] if len(parts) == 1 else type(parts[0]).combine(parts)), missing
