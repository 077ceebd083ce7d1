"""The work of one batch worker: a `Job` (the lines to run, the model settings) and the `LineRunner` that
runs lines on one Studio (one pipeline) and writes their outputs.

Per line: manifest values -> `GenerationInputs` -> `load_request` (files decoded once, validated once) ->
`Studio.generate` (the studio's reference cache does the sharing) -> images + JSON, the JSON last.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from .. import studio
from ..core.errors import CheckpointError, Parts2WholeInputError
from ..core.messages import one_line
from ..studio.inputs import load_request, output_parameters, output_paths
from ..studio.edit_sources import ServiceAnalysis
from ..studio.preprocessing import PreprocessingService
from .edit_line import is_edit_line, run_edit_line
from .manifest import ManifestLine, line_inputs
from .results import FAILED_PREFIX, STATUS_OK, LineResult
from .store import OutputStore

logger = logging.getLogger("parts2whole.batch")


class LineRunner:
    """Runs manifest lines on one Studio (one pipeline) and writes their outputs: the work of one worker."""

    def __init__(self, manifest: str, out_dir: str, *, weights: str | None = None, device: str | None = None,
                 dtype: str | None = None, cache_bytes: int | None = None):
        self.manifest = str(manifest)
        self.manifest_dir = Path(manifest).expanduser().parent
        self.store = OutputStore(out_dir)
        kwargs = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
        self.studio = studio.Studio(weights, device=device, dtype=dtype, **kwargs)
        self._analysis = None  # the parser and pose estimator for edit lines, made on the first one

    def load(self) -> None:
        """Load the model now (so the first line's time is the line's own)."""
        self.studio.pipeline()

    def run(self, line: ManifestLine) -> LineResult:
        """Generate one line and write its outputs; any failure becomes an error result, never an exception."""
        started = time.perf_counter()
        try:
            return self._generate(line, started)
        except (Parts2WholeInputError, CheckpointError) as error:
            message = one_line(error)
        except Exception as error:  # noqa: BLE001 - a bug or an environment problem: recorded, the batch goes on
            logger.debug("line %s failed", line.number, exc_info=True)
            message = f"{FAILED_PREFIX}{type(error).__name__}): {one_line(error)[:500]}"
        return LineResult.error(line, message, seconds=_since(started))

    def _generate(self, line: ManifestLine, started: float) -> LineResult:
        paths: list[Path]
        if is_edit_line(line):  # a line with a source photo: an edit (batch/edit_line.py)
            if self._analysis is None:
                self._analysis = ServiceAnalysis(PreprocessingService(self.studio))
            result, files = run_edit_line(self.studio, self._analysis, line, self.manifest_dir)
            paths = output_paths(Path(f"{line.id}.png"), len(result.images))
            parameters = result.parameters | {"outputs": [path.name for path in paths], "inputs": files}
        else:
            inputs = line_inputs(line, self.manifest_dir)
            request = load_request(inputs)  # validated once; Studio.generate trusts it
            result = self.studio.generate(request)
            paths = output_paths(Path(f"{line.id}.png"), len(result.images))
            parameters = output_parameters(result, paths, inputs)
        parameters = parameters | {
            "batch": {"id": line.id, "manifest": self.manifest, "line": line.number, "line_key": line.key}}
        try:
            for image, path in zip(result.images, paths):
                self.store.write_bytes(path.name, studio.png_bytes(image))
            # the JSON last: it is what says "this line is complete"
            self.store.write_bytes(f"{line.id}.json", studio.parameters_json(parameters).encode("utf-8"))
        except OSError as error:
            raise Parts2WholeInputError(
                f"Cannot write {self.store.path(paths[0].name)} ({error.strerror or error}).") from None
        return LineResult(id=line.id, line=line.number, status=STATUS_OK, seconds=_since(started),
                          message=" ".join(result.notes), outputs=[path.name for path in paths],
                          encoded_references=not result.reused_references)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


@dataclasses.dataclass
class Job:
    """What every worker of one run needs: the manifest, OUT_DIR, the work and the model settings."""

    manifest: str
    out_dir: str
    groups: list[list[ManifestLine]]  # the work, grouped by part set, in the order it should run
    weights: str | None
    device: str | None
    dtype: str | None
    cache_bytes: int | None
    progress: bool

    @property
    def lines(self) -> int:
        return sum(len(group) for group in self.groups)

    def runner_settings(self) -> dict:
        """The LineRunner's arguments (plain values: they travel to Ray actors)."""
        return {"manifest": self.manifest, "out_dir": self.out_dir, "weights": self.weights, "device": self.device,
                "dtype": self.dtype, "cache_bytes": self.cache_bytes}

    def runner(self) -> LineRunner:
        return LineRunner(**self.runner_settings())
