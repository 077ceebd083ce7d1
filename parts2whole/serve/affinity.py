"""Which worker gets a request: the one that already encoded its part set, else the least busy.

A request's *part set key* is the content hash of what its reference encoding depends on (the parts'
pixels, masks, labels, output size and fusion blocks), computed with the studio's own `reference_key`,
so two requests share a key exactly when a studio would reuse one encoding for both. Workers remember
the keys they served, least recently used first out, as many as their reference cache is sized for.

Sizing (shared with Ray Serve's `max_num_models_per_replica`): the studio's cache is bounded in bytes
(DEFAULT_CACHE_BYTES, 512 MiB). One reference at 768x512 records about 17.3 million values over the
UNet's self-attention layers (5 layers x 6144 tokens x 320 + 5 x 1536 x 640 + 5 x 384 x 1280 + 96 x 1280),
35 MB in fp16; a typical part set has three parts, about 104 MB, so a worker holds about five part sets.
A miss is never an error: the worker encodes the references again (one reference-UNet pass, about the
cost of one denoising step) and caches them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..studio import DEFAULT_CACHE_BYTES, reference_key

#: Values recorded per reference at 768x512 (see the module docstring), fp16 bytes each.
REFERENCE_VALUES_768x512 = 5 * 6144 * 320 + 5 * 1536 * 640 + 5 * 384 * 1280 + 96 * 1280
FP16_BYTES = 2
#: The parts of a typical request (a face, a top and trousers).
TYPICAL_PARTS = 3
TYPICAL_PART_SET_BYTES = REFERENCE_VALUES_768x512 * FP16_BYTES * TYPICAL_PARTS
#: Part sets one worker (or Ray Serve replica) is taken to hold: its cache bytes over a typical set.
MAX_PART_SETS_PER_WORKER = max(1, DEFAULT_CACHE_BYTES // TYPICAL_PART_SET_BYTES)
#: The identity a part set key is hashed under: routing happens before a model is chosen, and every
#: worker of one app runs the same weights, so the model's own identity adds nothing here.
PART_SET_IDENTITY = "part-set"


def part_set_key(request) -> str:
    """The routing key of a validated GenerationRequest: equal exactly when its encoding can be reused."""
    return reference_key(PART_SET_IDENTITY, request)


#: How many more requests than the least busy worker a warm worker may have and still get its part set:
#: one means a re-generation waits for at most about one generation rather than re-encoding elsewhere, so
#: a busy server spends its devices on denoising, while one popular part set still spills to others.
AFFINITY_BACKLOG = 1


class AffinityRouter:
    """Picks a worker index for a key: the least busy worker holding the key (unless it is more than
    AFFINITY_BACKLOG requests behind the least busy worker), else the least busy, ties in turn.

    `affinity=False` ignores the keys (least busy, ties in turn): the baseline the bench compares with.
    Thread-safe; it only counts, it runs nothing.
    """

    def __init__(self, workers: int, *, capacity: int = MAX_PART_SETS_PER_WORKER, affinity: bool = True):
        self.capacity = capacity
        self.affinity = affinity
        self.busy = [0] * workers
        self.keys: list[OrderedDict[str, None]] = [OrderedDict() for _ in range(workers)]
        self._turn = 0
        self._lock = threading.Lock()

    def pick(self, key: str, usable: list[int]) -> int | None:
        """The worker for `key` among `usable` (None when none is), counted busy until `done`."""
        with self._lock:
            if not usable:
                return None
            least = min(self.busy[index] for index in usable)
            warm = [index for index in usable if key in self.keys[index]] if self.affinity else []
            warm = [index for index in warm if self.busy[index] <= least + AFFINITY_BACKLOG]
            choice = min(warm, key=lambda index: self.busy[index]) if warm else None
            if choice is None:
                candidates = [index for index in usable if self.busy[index] == least]
                choice = candidates[self._turn % len(candidates)]
                self._turn += 1
            self.busy[choice] += 1
            self._remember(choice, key)
            return choice

    def done(self, index: int) -> None:
        with self._lock:
            self.busy[index] = max(0, self.busy[index] - 1)

    def forget(self, index: int) -> None:
        """A worker restarted: its cache is empty."""
        with self._lock:
            self.keys[index].clear()

    def _remember(self, index: int, key: str) -> None:
        keys = self.keys[index]
        keys[key] = None
        keys.move_to_end(key)
        while len(keys) > self.capacity:
            keys.popitem(last=False)
