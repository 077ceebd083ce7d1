"""Where the model runs: the device and precision choice, and ZeroGPU (Hugging Face Spaces) support."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from ..core.errors import Parts2WholeInputError

DEVICE_ENV = "P2W_DEVICE"
DTYPE_ENV = "P2W_DTYPE"
#: Seconds of GPU time asked of ZeroGPU per generation on Hugging Face Spaces.
ZERO_GPU_DURATION_S = 120

_DTYPE_NAMES = {"fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16",
                "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32", "float": "float32"}


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """Where the model runs and in which precision; `zero_gpu` means: load on CPU, move per call."""

    device: str
    dtype: Any  # torch.dtype (kept untyped so importing this module stays light)
    zero_gpu: bool = False

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def on_zero_gpu() -> bool:
    """True on a Hugging Face Space with ZeroGPU hardware (GPU attached only inside `spaces.GPU` calls)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in {"1", "true"}


def choose_device(device: str | None = None, dtype: str | None = None) -> DeviceChoice:
    """Pick CUDA (fp16, the precision of the official inference script), then MPS (fp16), then CPU (fp32).

    `device`/`dtype` (or P2W_DEVICE / P2W_DTYPE) override the choice, e.g. "cuda:1", "bf16".
    """
    import torch  # heavy: importing the studio (and `--help`) stays light

    device = device or os.environ.get(DEVICE_ENV) or None
    dtype = dtype or os.environ.get(DTYPE_ENV) or None
    zero_gpu = on_zero_gpu() and device is None
    if device is None:
        if zero_gpu or torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if dtype is None:
        dtype_value = torch.float32 if device.startswith("cpu") else torch.float16
    else:
        name = _DTYPE_NAMES.get(dtype.lower())
        if name is None:
            raise Parts2WholeInputError(f"Unknown dtype {dtype!r}; use fp16, bf16 or fp32.")
        dtype_value = getattr(torch, name)
    return DeviceChoice(device=device, dtype=dtype_value, zero_gpu=zero_gpu)


def gpu_task(duration: int = ZERO_GPU_DURATION_S) -> Callable[[Callable], Callable]:
    """Decorator: `spaces.GPU` on ZeroGPU Spaces, a no-op everywhere else (and when `spaces` is absent)."""

    def decorate(fn: Callable) -> Callable:
        if not on_zero_gpu():
            return fn
        try:
            import spaces  # type: ignore[import-not-found]  # optional: only on Hugging Face Spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=duration)(fn)

    return decorate
