"""The stages of one generation, as progress reports (the share of the bar each fills) and the polls
that let a caller stop it between stages and denoising steps."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..core.errors import GenerationCancelled

STAGE_PREPROCESSING = "Preprocessing"
STAGE_LOADING = "Loading model"
STAGE_ENCODING = "Encoding references"
STAGE_CACHED = "Reusing cached references"
STAGE_DENOISING = "Denoising"
STAGE_DECODING = "Decoding"
STAGE_DONE = "Done"
#: Each stage's start and end on the progress bar (0..1).
STAGE_SPANS = {
    STAGE_PREPROCESSING: (0.00, 0.03),
    STAGE_LOADING: (0.03, 0.05),
    STAGE_ENCODING: (0.05, 0.15),
    STAGE_CACHED: (0.05, 0.15),
    STAGE_DENOISING: (0.15, 0.95),
    STAGE_DECODING: (0.95, 1.00),
    STAGE_DONE: (1.00, 1.00),
}


@dataclasses.dataclass(frozen=True)
class ProgressUpdate:
    """One progress report: `fraction` of the whole generation done, in which stage, with a short text."""

    stage: str
    fraction: float
    step: int | None = None
    total: int | None = None

    @property
    def text(self) -> str:
        return f"{self.stage} {self.step}/{self.total}" if self.total else self.stage


ProgressCallback = Callable[[ProgressUpdate], None]


def report(callback: ProgressCallback | None, stage: str, step: int | None = None, total: int | None = None) -> None:
    """Tell `callback` (if any) that `stage` is at `step` of `total`."""
    if callback is None:
        return
    start, end = STAGE_SPANS[stage]
    fraction = start if not total else start + (end - start) * min(step or 0, total) / total
    callback(ProgressUpdate(stage=stage, fraction=round(fraction, 4), step=step, total=total))


def check_cancelled(cancelled: Callable[[], bool] | None) -> None:
    """Raise `GenerationCancelled` when the caller's poll says stop."""
    if cancelled is not None and cancelled():
        raise GenerationCancelled("The generation was stopped.")
