"""Keep freed CPU memory for reuse instead of handing it back to the kernel after every layer.

A diffusion call on the CPU allocates and frees tensors of a few MB in every layer, thousands of times.
With glibc's defaults such a block is either mmap-ed (above a threshold that starts at 128 KiB) or carved
from the heap top, which is trimmed back to the kernel as soon as 128 KiB+ lie free there. Either way the
next tensor lands on fresh pages, and the kernel zero-fills each of them on first touch. On the 2-core
benchmark machine that was about 15 % of the CPU time of a 6-reference call at 384x256 (docs/performance.md,
"CPU allocator": the same benchmark with and without this module).

`tune_cpu_allocator` raises glibc's trim threshold and top pad and fixes the mmap threshold at its maximum,
so freed blocks stay in the heap and are reused. The cost: the process keeps up to
`TRIM_THRESHOLD_BYTES` of freed memory instead of returning it, which suits an inference process. It is
a process-wide setting; the pipeline applies it once when built, unless `KEEP_MALLOC_DEFAULTS_ENV` is set.
Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

logger = logging.getLogger(__name__)

#: Set to 1 to keep the C library's allocator settings untouched.
KEEP_MALLOC_DEFAULTS_ENV = "P2W_KEEP_MALLOC_DEFAULTS"

# mallopt() parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: Free memory at the heap top is returned to the kernel only beyond this (mallopt takes a C int).
TRIM_THRESHOLD_BYTES = 2**31 - 1
#: Each time the heap grows, it grows by this much more (address space only until touched).
TOP_PAD_BYTES = 256 * 2**20
#: Blocks above this still get their own mapping (glibc's maximum on 64-bit), so a rare huge tensor, such
#: as a VAE activation at a large size, is returned to the kernel when freed.
MMAP_THRESHOLD_BYTES = 32 * 2**20

_lock = threading.Lock()
_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Apply the settings above once per process; True when they are in effect (glibc only)."""
    global _tuned
    with _lock:
        if _tuned is not None:
            return _tuned
        _tuned = False
        if os.environ.get(KEEP_MALLOC_DEFAULTS_ENV, "").strip() not in ("", "0"):
            return False
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(None)  # the running process: its C library's symbols, with no library search
            applied = [libc.mallopt(parameter, value) == 1 for parameter, value in (
                (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (M_TOP_PAD, TOP_PAD_BYTES), (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))]
        except (OSError, AttributeError) as error:
            logger.info("CPU allocator left at its defaults (%s)", error)
            return False
        _tuned = all(applied)
        if _tuned:
            logger.info("CPU allocator: freed memory is kept for reuse (set %s=1 to keep the defaults)", KEEP_MALLOC_DEFAULTS_ENV)
        return _tuned
