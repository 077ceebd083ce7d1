"""The ONE rule for where the project keeps files it downloads or builds, and the Hub download helper.

Everything the project writes to disk by itself lives in one folder, `weights_dir()`:
the preprocessing models (human parser, Segment Anything, DWPose, DensePose and its safetensors
conversion), both tiny checkpoints (`tiny-parts2whole`, `tiny-preprocess`) and the photo-examples cache.
The diffusion weights are the exception: they stay in the Hugging Face cache (`HF_HOME`), where Spaces'
`preload_from_hub` puts them and where Docker's `HF_HOME=/data/huggingface` volume keeps them.

The folder, decided on every call (so a test or a server can change the environment):

1. `$P2W_WEIGHTS_DIR` when set. `make` sets it to the checkout's `weights/` (a checkout is an editable
   install, so the package's own location says nothing); Docker sets `/data/weights`; `app.py` run from
   a checkout defaults it to that checkout's `weights/`.
2. `$PARTS2WHOLE_WEIGHTS_DIR`, the older name that moved the preprocessing weights alone, now means the
   same as 1 (one folder for everything) and is honoured only when 1 is unset, with a warning once.
3. Otherwise a per-user cache, as huggingface_hub does for its own: `$XDG_CACHE_HOME/parts2whole`,
   i.e. `~/.cache/parts2whole`. Never a folder inside the installed package: after `pip install .`
   that is site-packages, read-only on many systems and not the place for 1 GB of downloads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import CheckpointError

logger = logging.getLogger(__name__)

#: The folder for everything the project downloads or builds (see the module docstring).
WEIGHTS_DIR_ENV = "P2W_WEIGHTS_DIR"
#: The older, preprocessing-only name: now an alias of WEIGHTS_DIR_ENV, used only when that is unset.
LEGACY_WEIGHTS_DIR_ENV = "PARTS2WHOLE_WEIGHTS_DIR"
#: The per-user cache's parent, as the XDG base-directory convention (and huggingface_hub) read it.
XDG_CACHE_ENV = "XDG_CACHE_HOME"
USER_CACHE_NAME = "parts2whole"
#: Seconds to wait for the Hub before calling it unreachable (the app must start, not hang).
HUB_TIMEOUT_S = 10.0
#: Environment variables a remote worker (a Ray actor or replica) gets from its driver: the weights folder,
#: device and dtype choices, and the Hub's settings, so it resolves weights as the driver does.
FORWARDED_ENV_PREFIXES = ("P2W_", "HF_")
#: The folder that holds the `parts2whole` package (this checkout), first on a remote worker's path.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

_warned_legacy = False


def weights_dir() -> Path:
    """The folder for downloaded and locally built weights and caches (read from the environment on each call)."""
    global _warned_legacy
    configured = os.environ.get(WEIGHTS_DIR_ENV)
    if not configured and os.environ.get(LEGACY_WEIGHTS_DIR_ENV):
        configured = os.environ[LEGACY_WEIGHTS_DIR_ENV]
        if not _warned_legacy:
            _warned_legacy = True
            logger.warning("%s is deprecated: set %s instead (it now holds every download, not only the "
                           "preprocessing weights).", LEGACY_WEIGHTS_DIR_ENV, WEIGHTS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get(XDG_CACHE_ENV) or "~/.cache"
    return Path(cache_home).expanduser() / USER_CACHE_NAME


def forwarded_env() -> dict[str, str]:
    """The environment of a remote worker: FORWARDED_ENV_PREFIXES variables (the weights folder made absolute,
    as a worker may start in another directory) and this checkout first on PYTHONPATH (a cluster node
    without it installs parts2whole itself)."""
    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV_PREFIXES)}
    if WEIGHTS_DIR_ENV in env:
        env[WEIGHTS_DIR_ENV] = str(Path(env[WEIGHTS_DIR_ENV]).expanduser().resolve())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def is_unreachable(error: BaseException) -> bool:
    """Network-shaped failures (no DNS, refused, timed out, offline mode) as opposed to a wrong repo id."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled  # heavy: imported on first use, keeps importing this package light

    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "TransportError",
                         "NetworkError", "ReadTimeout", "ProxyError"})


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks huggingface_hub never to touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def hub_file(repo_id: str, filename: str, *, revision: str | None, subfolder: str) -> Path:
    """Path of `filename` from Hub repo `repo_id`, downloaded into `weights_dir()/<subfolder>/` if missing.

    A file already there is used as is, without touching the network (an offline machine is prepared by
    copying the folder). Raises `CheckpointError` with the manual-download instructions when it fails.
    """
    target_dir = weights_dir() / subfolder
    local = target_dir / filename
    if local.is_file() and local.stat().st_size > 0:
        return local
    from huggingface_hub import hf_hub_download  # keeps `import preprocess` light

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_dir=target_dir))
    except Exception as error:  # noqa: BLE001 - network, auth, missing file: all mean "get it by hand"
        url = f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/{filename}"
        raise CheckpointError(
            f"Could not download {filename} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            f"Download {url} and put it at {local}."
        ) from error
