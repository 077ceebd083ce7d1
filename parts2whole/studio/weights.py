"""Which checkpoint the studio loads: `--weights` (a Hub id, a folder, "tiny" or the official model) turned
into a local folder, with the Hub download and the tiny-model fallback when the Hub cannot be reached.
The weights folder and the Hub helpers themselves are `parts2whole.core.weights`."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from pathlib import Path

from ..core.errors import CheckpointError
from ..core.weights import HUB_TIMEOUT_S, hub_offline, is_unreachable, weights_dir

logger = logging.getLogger("parts2whole.studio")

#: What `--weights` / P2W_WEIGHTS accept besides a Hub id or a folder.
TINY_WEIGHTS = "tiny"
OFFICIAL_WEIGHTS = "official"
WEIGHTS_ENV = "P2W_WEIGHTS"
TINY_DIR_NAME = "tiny-parts2whole"
#: Written last into the tiny checkpoint folder, so a half-built folder is never used.
TINY_COMPLETE_MARKER = ".complete"
#: Files of the VAE repository that are read (it also ships pickled and duplicate weights).
VAE_PATTERNS = ["config.json", "diffusion_pytorch_model.safetensors"]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TINY_BUILD_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint found on disk, and what to tell people about it."""

    path: str  # local folder handed to Parts2WholePipeline.from_pretrained
    name: str  # what the UI, logs and the parameters JSON call it
    is_tiny: bool = False
    vae_path: str | None = None  # separate VAE folder (the official inference script swaps in sd-vae-ft-mse)
    revision: str | None = None
    notice: str | None = None  # one line explaining a fallback, for the log
    reason: str | None = None  # why the fallback happened, in a few words, for the UI banner


def ensure_tiny_checkpoint(folder: Path | None = None) -> Path:
    """Build the tiny random checkpoint once (seconds) and reuse it; safe across threads and processes."""
    from filelock import FileLock  # only needed when the tiny model is built

    from ..model.tiny import build_tiny_checkpoint  # torch/diffusers: keep importing the studio light

    folder = Path(folder) if folder is not None else weights_dir() / TINY_DIR_NAME
    if (folder / TINY_COMPLETE_MARKER).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _TINY_BUILD_LOCK, FileLock(str(folder) + ".lock"):
        if not (folder / TINY_COMPLETE_MARKER).exists():
            built = Path(build_tiny_checkpoint(folder))
            if built.resolve() != folder.resolve():
                folder = built
            (folder / TINY_COMPLETE_MARKER).write_text("built by parts2whole.model.tiny.build_tiny_checkpoint\n")
    return folder


def _download(repo_id: str, revision: str | None, *, vae: bool = False, with_vae: bool = True) -> str:
    """A Hub snapshot in the HF cache: from disk when it is already there, else downloaded (tqdm progress)."""
    from huggingface_hub import HfApi, snapshot_download  # heavy: keep importing the studio light

    from ..model.loading import resolve_checkpoint  # torch/diffusers: keep importing the studio light

    def fetch(local_files_only: bool) -> str:
        if vae:
            return snapshot_download(repo_id, revision=revision, allow_patterns=VAE_PATTERNS,
                                     local_files_only=local_files_only, etag_timeout=HUB_TIMEOUT_S)
        return str(resolve_checkpoint(repo_id, revision=revision, with_vae=with_vae, local_files_only=local_files_only))

    try:
        return fetch(local_files_only=True)
    except Exception:  # not cached yet (or partially): go to the network below
        if hub_offline():
            raise
    # One quick request first: a download that cannot connect retries with back-off for half a minute.
    HfApi().model_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S)
    logger.info("Downloading %s%s from the Hugging Face Hub...", repo_id, f"@{revision}" if revision else "")
    return fetch(local_files_only=False)


def _tiny_weights(notice: str | None = None, reason: str | None = None) -> ResolvedWeights:
    folder = ensure_tiny_checkpoint()
    return ResolvedWeights(path=str(folder), name="tiny random model (weights/tiny-parts2whole)",
                           is_tiny=True, notice=notice, reason=reason)


def _looks_like_tiny(folder: Path) -> bool:
    return (folder / TINY_COMPLETE_MARKER).exists()


def resolve_weights(spec: str | None = None) -> ResolvedWeights:
    """Turn `--weights` (Hub id, folder, "tiny", or nothing for the official model) into a local folder.

    When the Hub is unreachable, says so in one line and falls back to the tiny local checkpoint.
    """
    # torch/diffusers come with the loading module: keep importing the studio light
    from ..model.loading import OFFICIAL_REPO_ID, OFFICIAL_REVISION, OFFICIAL_VAE_REPO_ID, OFFICIAL_VAE_REVISION

    spec = (spec or os.environ.get(WEIGHTS_ENV) or OFFICIAL_WEIGHTS).strip()
    if spec.lower() == TINY_WEIGHTS:
        return _tiny_weights()
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return ResolvedWeights(path=str(folder), name=str(folder), is_tiny=_looks_like_tiny(folder))
    official = spec.lower() == OFFICIAL_WEIGHTS or spec == OFFICIAL_REPO_ID
    if not official and not _HUB_ID.fullmatch(spec):
        raise CheckpointError(f"Weights {spec!r}: no such folder, and not a Hub id like 'owner/name' "
                              f"(use a folder, a Hub id, or 'tiny').")
    repo_id = OFFICIAL_REPO_ID if official else spec
    revision = OFFICIAL_REVISION if official else None
    try:
        path = _download(repo_id, revision, with_vae=not official)  # the official VAE comes separately
        vae_path = _download(OFFICIAL_VAE_REPO_ID, OFFICIAL_VAE_REVISION, vae=True) if official else None
    except Exception as error:  # noqa: BLE001 - classified just below
        if not is_unreachable(error):
            raise CheckpointError(f"Could not get weights {repo_id!r} from the Hub: {error}") from error
        cause = "HF_HUB_OFFLINE is set" if hub_offline() else f"{type(error).__name__}"
        notice = (f"Hugging Face Hub unreachable ({cause}) and {repo_id} is not cached: "
                  f"falling back to the tiny random model in {weights_dir() / TINY_DIR_NAME} (outputs are noise).")
        logger.warning(notice)
        reason = f"the Hugging Face Hub could not be reached ({cause}) to download {repo_id}"
        return _tiny_weights(notice, reason)
    name = f"{repo_id}@{revision[:7]}" if revision else repo_id
    return ResolvedWeights(path=path, name=name, vae_path=vae_path, revision=revision)
