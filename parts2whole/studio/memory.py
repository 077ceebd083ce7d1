"""Running out of memory: recognising it (CUDA, MPS or CPU), freeing what an abandoned generation held,
and a message that says what to change."""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("parts2whole.studio")

_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
                        "failed to allocate memory")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA/MPS/CPU allocation failures (torch reports some as RuntimeError with a telling text)."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ in {"OutOfMemoryError", "OutOfMemory"}:  # torch.cuda.OutOfMemoryError and kin
        return True
    return isinstance(error, RuntimeError) and any(text in str(error).lower() for text in _OUT_OF_MEMORY_TEXTS)


def free_memory() -> None:
    """Give the memory of an abandoned generation back, so the next request has room."""
    gc.collect()
    try:
        import torch  # heavy: importing the studio (and `--help`) stays light

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing is best effort
        logger.debug("could not empty the CUDA cache", exc_info=True)


def out_of_memory_message(request, device: str) -> str:
    """What to change after running out of memory on `device` with `request` (a GenerationRequest)."""
    where = "the GPU" if str(device).startswith(("cuda", "mps")) else "the computer"
    parts = len(request.references)
    images = f"{request.num_images} images" if request.num_images != 1 else "1 image"
    return (f"Out of memory on {where} while generating {images} of {request.height}x{request.width} from "
            f"{parts} part{'s' if parts != 1 else ''}. Try a smaller output size (e.g. 512x384), fewer images "
            "or fewer parts, then generate again.")
