"""Which dataset the examples come from, at which revision, and the file systems that read it: the Hub
through HfFileSystem (range requests), or a local copy of the dataset (P2W_EXAMPLES_SOURCE)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.dataset_layout import HUB_DATASET_ID
from ..core.weights import HUB_TIMEOUT_S, hub_offline, is_unreachable

DATASET_ID = HUB_DATASET_ID
#: The dataset commit read by default: the latest commit of `main` ("Update README.md", 2024-05-26) when this
#: module was written. Pinned so the selection (and the bytes read) do not change under our feet.
DATASET_REVISION = "1f3d6f3d9ac8043dbc8c9ab45dff4a0dd5b39a77"
DATASET_LICENSE = "Apache-2.0 (dataset card); images from DeepFashion-MultiModal"
#: P2W_EXAMPLES_SOURCE=DIR: read a local copy of the dataset (test.jsonl and the zips) instead of the Hub.
EXAMPLES_SOURCE_ENV = "P2W_EXAMPLES_SOURCE"


class ExampleFetchError(RuntimeError):
    """The dataset could not be read at all (no index, no archive, the Hub unreachable): say why in one line."""


def hub_file_system(revision: str = DATASET_REVISION):
    """(fs, root) reading the Hub dataset at `revision` through HfFileSystem (range requests).

    One quick request first (HUB_TIMEOUT_S, no retries), so an unreachable Hub fails in seconds."""
    # huggingface_hub is imported only when the Hub is read: `--help` and a cached start stay light.
    from huggingface_hub import HfApi, HfFileSystem

    if hub_offline():
        raise ExampleFetchError("HF_HUB_OFFLINE is set")
    try:
        HfApi().dataset_info(DATASET_ID, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - reported as one line
        detail = f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
        if is_unreachable(error):
            raise ExampleFetchError(f"the Hugging Face Hub could not be reached ({detail})") from None
        raise ExampleFetchError(f"{DATASET_ID}@{revision[:12]} could not be read ({detail})") from None
    return HfFileSystem(), f"datasets/{DATASET_ID}@{revision}"


def local_file_system(folder: str | os.PathLike):
    """(fs, root) reading a local copy of the dataset (a folder with test.jsonl and the zips)."""
    # fsspec is imported only when a local copy is read: keeps `--help` and a cached start light.
    from fsspec.implementations.local import LocalFileSystem

    if not Path(folder).is_dir():
        raise ExampleFetchError(f"{folder} is not a folder (a local copy of {DATASET_ID} was expected)")
    return LocalFileSystem(), str(Path(folder).resolve())


def default_file_system(revision: str = DATASET_REVISION):
    """The local copy named by P2W_EXAMPLES_SOURCE, else the Hub (see `hub_file_system`)."""
    source = os.environ.get(EXAMPLES_SOURCE_ENV)
    return local_file_system(source) if source else hub_file_system(revision)
