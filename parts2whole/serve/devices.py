"""Which devices the app serves on: `--devices all`, a list such as `cuda:0,cuda:2`, or P2W_DEVICES.

`--devices` wins over the single `--device`; on ZeroGPU Spaces (a GPU attached per call) there is no
pool, whatever is asked. `parse_devices` returns None when the app should run one in-process studio.
"""

from __future__ import annotations

import os

from ..core.errors import Parts2WholeInputError
from ..studio import on_zero_gpu

DEVICES_ENV = "P2W_DEVICES"
ALL_DEVICES = "all"
#: Device names a worker may be given (an index may follow cuda, e.g. cuda:1).
DEVICE_KINDS = ("cuda", "cpu", "mps")


def visible_gpus() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch  # heavy: only `--devices all` needs it, `--help` stays light

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _checked(name: str) -> str:
    name = name.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()) or (index and kind != "cuda"):
        raise Parts2WholeInputError(f"Unknown device {name!r} in --devices; use all, or a list such as "
                                    "cuda:0,cuda:1 (cpu,cpu runs two CPU workers).")
    return name


def parse_devices(spec: str | None) -> list[str] | None:
    """The workers' devices, or None for no pool (nothing asked, a single device, or ZeroGPU).

    `spec` is `--devices` (else P2W_DEVICES): "all" is every visible GPU (one CPU worker without any),
    or a comma-separated list. It wins over `--device` (the app ignores that one, saying so), which alone
    never starts a pool.
    """
    spec = (spec or os.environ.get(DEVICES_ENV) or "").strip()
    if not spec or on_zero_gpu():
        return None
    if spec.lower() == ALL_DEVICES:
        count = visible_gpus()
        return [f"cuda:{index}" for index in range(count)] if count else ["cpu"]
    devices = [_checked(name) for name in spec.split(",") if name.strip()]
    if not devices:
        raise Parts2WholeInputError("--devices is empty; use all, or a list such as cuda:0,cuda:1.")
    return devices
