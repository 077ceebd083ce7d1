"""Where a picture came from: the pixel hashes of the cached parts and poses, so a picture put into a slot
can be traced back to its dataset sample (the bundle says where a pose came from; a part gets the
dataset's mask)."""

from __future__ import annotations

import threading

from PIL import Image

from preprocess.images import pixel_hash

from .cache import Manifest

_KNOWN: dict[str, dict[str, str]] = {}
_KNOWN_MASKS: dict[str, str] = {}
_KNOWN_LOCK = threading.Lock()


def register_manifest(manifest: Manifest) -> None:
    """Remember the pixel hashes of the cached parts and poses, so a picture put into a slot can be traced
    back to its dataset sample (the bundle says where a pose came from; a part gets the dataset's mask)."""
    with _KNOWN_LOCK:
        for example in manifest.examples:
            for label, relative in example.parts.items():
                digest = example.hashes.get(relative)
                if digest:
                    _KNOWN[digest] = {"dataset": manifest.dataset, "revision": manifest.revision,
                                      "sample": example.sample_id, "reference": example.reference_id,
                                      "role": f"{label} reference"}
                    _KNOWN_MASKS[digest] = manifest.path(example.masks[label])
            digest = example.hashes.get(example.pose)
            if digest:
                _KNOWN[digest] = {"dataset": manifest.dataset, "revision": manifest.revision,
                                  "sample": example.sample_id, "role": "DensePose map of the target"}
        for pose in manifest.poses:
            _KNOWN[pose.hash] = {"dataset": manifest.dataset, "revision": manifest.revision, "sample": pose.sample_id,
                                 "role": "DensePose map of the target"}


def dataset_source(image: Image.Image | None) -> dict[str, str] | None:
    """{"dataset", "revision", "sample", "role"} when `image` (as loaded by preprocess.images) is a cached
    dataset picture, else None."""
    if image is None or not _KNOWN:
        return None
    with _KNOWN_LOCK:
        found = _KNOWN.get(pixel_hash(image))
    return dict(found) if found else None


def dataset_mask_path(image: Image.Image | None) -> str | None:
    """The dataset's soft mask of a cached reference photo, else None."""
    if image is None or not _KNOWN_MASKS:
        return None
    with _KNOWN_LOCK:
        return _KNOWN_MASKS.get(pixel_hash(image))
