"""What the pool tests and the Ray Serve tests share: small requests on the tiny model, and the recorders
that turn progress reports into timestamps (overlap) and into a trigger (Stop, killing a worker)."""

from __future__ import annotations

import threading
import time

from PIL import Image

from app_fixtures import example_file
from parts2whole.studio import STAGE_DENOISING, GenerationRequest

#: Steps of a generation that must still be running when something happens to it (overlap, Stop, a kill).
LONG_STEPS = 40
#: Steps of the generation a worker is killed in (at its first step): it is also run in-process to compare.
KILL_STEPS = 12
#: Steps of a generation whose output is compared.
SHORT_STEPS = 3


def request(*parts: str, seed: int = 1, steps: int = SHORT_STEPS) -> GenerationRequest:
    """A 96x64 request (the pose map's proportions) on the given parts of the example outfit."""
    return GenerationRequest(references={part.replace("_", " "): Image.open(example_file(part)) for part in parts},
                             structure=Image.open(example_file("pose")), prompt="a person", seed=seed, steps=steps,
                             height=96, width=64)


class Recorder:
    """A progress callback: when denoising started and ended (monotonic seconds), the last step seen, and an
    action run once when denoising step `at_step` is reported."""

    def __init__(self, at_step: int | None = None, action=None):
        self.first = self.last = None
        self.steps: list[int] = []
        self.at_step, self.action = at_step, action
        self.fired = threading.Event()

    def __call__(self, update) -> None:
        if update.stage != STAGE_DENOISING:
            return
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.steps.append(update.step or 0)
        if self.action is not None and not self.fired.is_set() and (update.step or 0) >= self.at_step:
            self.fired.set()
            self.action()


def run_concurrently(studio, requests: list[GenerationRequest]) -> tuple[list, list[Recorder]]:
    """Each request in its own thread (as two people pressing Generate); results and recorders in order."""
    recorders = [Recorder() for _ in requests]
    results: list = [None] * len(requests)

    def run(index: int) -> None:
        results[index] = studio.generate(requests[index], progress=recorders[index])

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, recorders


def assert_overlapped(recorders: list[Recorder]) -> None:
    """Every denoising interval intersects every other: they ran at the same time, not one after another."""
    starts, ends = [r.first for r in recorders], [r.last for r in recorders]
    assert None not in starts, "a generation reported no denoising step"
    assert max(starts) < min(ends), f"denoising intervals do not overlap: {list(zip(starts, ends))}"
