"""Where preprocessing models live on disk and how they get there (Hub download on first use).

Files go to ``weights/<subfolder>/`` under the project root, or under ``$P2W_WEIGHTS_DIR`` (the folder the
studio keeps the diffusion weights in: one volume for everything, e.g. ``/data/weights`` in Docker);
``$PARTS2WHOLE_WEIGHTS_DIR``, the older preprocessing-only name, still wins where it is set,
so an offline machine can be prepared by copying that folder. A file already present there is used
as is, without touching the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from parts2whole.errors import CheckpointError

#: Environment variable that moves the preprocessing weights only (older name; wins where set).
WEIGHTS_DIR_ENV = "PARTS2WHOLE_WEIGHTS_DIR"
#: The studio's weights folder (parts2whole.studio.WEIGHTS_DIR_ENV): everything goes there when set.
SHARED_WEIGHTS_DIR_ENV = "P2W_WEIGHTS_DIR"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def weights_dir() -> Path:
    """The folder holding downloaded preprocessing weights (read from the environment on each call)."""
    configured = os.environ.get(WEIGHTS_DIR_ENV) or os.environ.get(SHARED_WEIGHTS_DIR_ENV)
    return Path(configured).expanduser() if configured else _PROJECT_ROOT / "weights"


def hub_file(repo_id: str, filename: str, *, revision: str | None, subfolder: str) -> Path:
    """Path of ``filename`` from Hub repo ``repo_id``, downloaded into ``weights/<subfolder>/`` if missing.

    Raises :class:`CheckpointError` with the manual-download instructions when the download fails.
    """
    target_dir = weights_dir() / subfolder
    local = target_dir / filename
    if local.is_file() and local.stat().st_size > 0:
        return local
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_dir=target_dir))
    except Exception as error:  # noqa: BLE001 - network, auth, missing file: all mean "get it by hand"
        url = f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/{filename}"
        raise CheckpointError(
            f"Could not download {filename} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            f"Download {url} and put it at {local}."
        ) from error
