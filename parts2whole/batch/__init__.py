"""Batch lookbooks: many portraits from one manifest, in this process or on a Ray cluster.

`python -m parts2whole batch MANIFEST -o OUT_DIR [--engine local|ray]` and `run(manifest, out_dir)`.

Data flow (one way):

    MANIFEST (JSON Lines or CSV)
      -> read_manifest      one ManifestLine per line: its id, values, content key, or the error that stops it
      -> plan               lines whose outputs are complete are skipped (nothing is rewritten); the rest are
                            grouped by part set (`part_set_key`) so each set is encoded once per worker
      -> engine             local: one Studio in this process, line after line (tqdm progress bar)
                            ray:   Ray Data, one block per group (or slice of a big group), a callable class
                                   through `map_batches` on an actor pool: one pipeline per actor, one GPU each
      -> LineRunner         per line: manifest values -> the `generate` options -> cli.load_request ->
                            Studio.generate (the studio's reference cache does the sharing) -> images + JSON
      -> OUT_DIR            <id>.png (<id>_<k>.png for several) and <id>.json, written atomically, JSON last;
                            results.jsonl (id, status, seconds, message), written by the driver

A line's outputs are complete when its JSON exists, parses, names this very line (its content key) and every
image it lists exists: an interrupted line has no JSON yet, so it is made again on the next run.

Manifest keys are the web app's `/generate` parameter names (one vocabulary for the app, the API client and
batches); the values and defaults are those of `python -m parts2whole generate`, and each bad line gets the
one-line message `generate` would print for it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import difflib
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import CheckpointError, Parts2WholeInputError
from ..core.labels import PART_LABELS

logger = logging.getLogger("parts2whole.batch")

ENGINES = ("local", "ray")
RESULTS_FILE = "results.jsonl"
STATUS_OK, STATUS_ERROR = "ok", "error"
#: What `<id>.png` may be called: a plain file name on every filesystem and object store.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: Hex digits of the content hash that names a line without an `id` (48 bits: no clash in any real manifest).
HASH_ID_DIGITS = 12
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
#: results.jsonl is rewritten (atomically, in manifest order) at most this often while a batch runs, and at the end.
RESULTS_WRITE_INTERVAL_S = 2.0
#: Temporary files of atomic writes; a run removes the ones an interrupted run left behind.
TEMPORARY_MARKER = ".partial-"
#: On a CPU-only Ray instance one CPU stays free for Ray Data's own tasks (else the pipeline can stall).
RAY_RESERVED_CPUS = 1
RAY_INSTALL_HINT = ('the Ray engine needs Ray: pip install -r requirements-ray.txt '
                    '(or pip install "parts2whole[ray]")')
#: Environment variables forwarded from the driver to Ray actors (weights folder, device, Hub settings).
FORWARDED_ENV_PREFIXES = ("P2W_", "HF_")

# ----------------------------------------------------------------------------------------------- vocabulary

#: Manifest key -> part label, and mask key -> part label: the `/generate` endpoint's names.
PART_KEYS = {label.replace(" ", "_"): label for label in PART_LABELS}
MASK_KEYS = {f"{key}_mask": label for key, label in PART_KEYS.items()}
#: Manifest key -> attribute of the `generate` options (argparse namespace) it sets.
SETTING_KEYS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "steps": "steps",
                "guidance": "guidance", "height": "height", "width": "width", "num_images": "num_images",
                "fusion_blocks": "fusion_blocks", "scheduler": "scheduler"}
FILE_KEYS = (*PART_KEYS, *MASK_KEYS, "pose")
MANIFEST_KEYS = ("id", *(key for part in PART_KEYS for key in (part, f"{part}_mask")), "pose", *SETTING_KEYS)
#: Keys whose value is part of the reference encoding (with the part and mask files): they define a part set.
ENCODING_SETTING_KEYS = ("height", "width", "fusion_blocks")


def _normalise_key(key: str) -> str:
    """ "Upper-Body-Clothes " -> "upper_body_clothes" (CSV headers are typed by people)."""
    return re.sub(r"[\s-]+", "_", str(key).strip().lower())


def _canonical_value(value: Any) -> str:
    """7, "7" and " 7 " are the same value: a line's key does not depend on JSON Lines vs CSV."""
    return value.strip() if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# ----------------------------------------------------------------------------------------------- manifest


@dataclasses.dataclass
class ManifestLine:
    """One line of the manifest: where it is, what it asks for, and why it cannot run (if it cannot)."""

    number: int  # line number in the manifest file (1 = the first line; a CSV header is line 1)
    id: str
    values: dict[str, Any]  # normalised keys -> values as written (paths still relative to the manifest)
    key: str = ""  # content hash of the values: says whether existing outputs were made from this line
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ManifestLine:
        return cls(**json.loads(text))


def content_key(values: dict[str, Any]) -> str:
    canonical = {key: _canonical_value(value) for key, value in values.items() if key != "id"}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _raw_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line number, values or None, error or None) for each non-blank line of a JSON Lines or CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise Parts2WholeInputError(f"Manifest {path} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
    suffix = path.suffix.lower()
    is_csv = suffix in CSV_SUFFIXES or (suffix not in JSONL_SUFFIXES and not text.lstrip().startswith("{"))
    if not is_csv:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, None, f"not valid JSON ({error.msg} at column {error.colno}); one JSON object per line"
                continue
            if not isinstance(values, dict):
                yield number, None, f"a JSON object {{...}} per line is expected, got {type(values).__name__}"
                continue
            yield number, values, None
        return
    extra = "\0extra"  # where DictReader puts the cells of a row longer than the header
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=extra)
    if not reader.fieldnames:
        return
    columns = len(reader.fieldnames)
    for row in reader:
        number = reader.line_num  # the line the row ends on (the row's line, unless a quoted cell spans lines)
        if extra in row:
            yield number, None, f"{columns + len(row[extra])} cells, but the header has {columns} columns"
            continue
        values = {key: value for key, value in row.items() if key is not None}
        if all(_is_missing(value) for value in values.values()):
            continue
        yield number, values, None


def read_manifest(manifest: str | os.PathLike) -> list[ManifestLine]:
    """Every line of a manifest, each with its id and, when it cannot run, the one-line reason.

    Lines are checked here for what needs no image (known keys, a pose, an id that makes a file name, no
    mask without its image, each id once); everything else (files, sizes, numbers) is checked when the line
    runs, by the same code as `generate`.
    """
    path = Path(manifest).expanduser()
    if not path.is_file():
        raise Parts2WholeInputError(f"Manifest {path} does not exist (or is a folder). Check the path.")
    lines: list[ManifestLine] = []
    first_use: dict[str, int] = {}
    for number, raw, error in _raw_lines(path):
        if raw is None:
            lines.append(ManifestLine(number=number, id=f"line-{number}", values={}, error=f"line {number}: {error}."))
            continue
        values = {_normalise_key(key): value for key, value in raw.items() if not _is_missing(value)}
        key = content_key(values)
        given_id = values.get("id")
        line_id = _canonical_value(given_id) if given_id is not None else key[:HASH_ID_DIGITS]
        line = ManifestLine(number=number, id=line_id, values=values, key=key)
        line.error = _line_error(line, given_id, first_use)
        if line.error is None:
            first_use[line.id] = number
        lines.append(line)
    return lines


def _line_error(line: ManifestLine, given_id: Any, first_use: dict[str, int]) -> str | None:
    where = f"line {line.number}"
    unknown = [key for key in line.values if key not in MANIFEST_KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, MANIFEST_KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (f"{where}: unknown key {key!r}; {hint}the keys are the /generate parameters: "
                f"{', '.join(MANIFEST_KEYS)}.")
    if given_id is not None and not ID_PATTERN.fullmatch(line.id):
        return (f"{where}: id {line.id!r} cannot name a file; use letters, digits, '.', '_' and '-' "
                "(at most 100, starting with a letter or digit).")
    for key in FILE_KEYS:
        value = line.values.get(key)
        if value is not None and not isinstance(value, str):
            return f"{where}: {key} must be a file path (text), got {value!r}."
    for mask_key, label in MASK_KEYS.items():
        part_key = mask_key.removesuffix("_mask")
        if mask_key in line.values and part_key not in line.values:
            return f"{where}: {mask_key} was given without {part_key}; add the {part_key} image or drop the mask."
    if "pose" not in line.values:
        return f"{where}: no pose: add a pose key with the pose map image (a DensePose rendering of the body)."
    if line.id in first_use:
        how = "give each line its own id" if given_id is not None else "the line repeats it; give it an id or another seed"
        return f"{where}: id {line.id!r} is already used by line {first_use[line.id]}; {how}."
    return None


def resolve_path(value: str, manifest_dir: Path) -> Path:
    """A manifest path: absolute as it is, else relative to the manifest's folder."""
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else manifest_dir / path


def part_set_key(line: ManifestLine, manifest_dir: Path, digests: dict[Path, str] | None = None) -> str:
    """What the reference encoding of a line depends on, read cheaply from the files (bytes, not pixels).

    The studio's cache keys by decoded pixels (`studio.reference_key`); files with the same bytes have the
    same pixels, so lines with the same key here share one encoding there. Used only to order the work.
    """
    digests = {} if digests is None else digests
    hasher = hashlib.sha256()
    for key in ENCODING_SETTING_KEYS:
        hasher.update(f"{key}={_canonical_value(line.values.get(key, ''))}|".encode())
    for key in (*PART_KEYS, *MASK_KEYS):
        if key not in line.values:
            continue
        path = resolve_path(line.values[key], manifest_dir).resolve()
        if path not in digests:
            try:
                digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                digests[path] = f"unreadable:{path}"  # the line will fail with the loader's message
        hasher.update(f"{key}={digests[path]}|".encode())
    return hasher.hexdigest()


def group_by_part_set(lines: list[ManifestLine], manifest_dir: Path) -> list[list[ManifestLine]]:
    """Lines with the same parts together, groups in order of first appearance, lines in manifest order."""
    digests: dict[Path, str] = {}
    groups: dict[str, list[ManifestLine]] = {}
    for line in lines:
        groups.setdefault(part_set_key(line, manifest_dir, digests), []).append(line)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------- outputs


class OutputStore:
    """OUT_DIR: a local folder (plain files, atomic renames) or an fsspec URL (s3://, gs://, a shared mount).

    Only a location string is kept, so the store pickles to Ray actors and reopens its filesystem there.
    """

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self.is_url = "://" in self.location and not self.location.startswith("file://")
        self._fs = None

    def __getstate__(self):
        return {"location": self.location, "is_url": self.is_url, "_fs": None}

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as error:
                raise Parts2WholeInputError(
                    f"Cannot write to {self.location}: {error} (install the fsspec filesystem for it, "
                    "e.g. s3fs for s3://, gcsfs for gs://).") from None
        return self._fs

    def _local(self, name: str = "") -> Path:
        folder = Path(self.location.removeprefix("file://")).expanduser()
        return folder / name if name else folder

    def _remote(self, name: str) -> str:
        self.fs  # noqa: B018 - sets _root
        return f"{self._root.rstrip('/')}/{name}"

    def path(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/{name}" if self.is_url else str(self._local(name))

    def prepare(self) -> None:
        """Create OUT_DIR, check that it takes files, and remove temporary files of an interrupted run."""
        if self.is_url:
            self.fs.makedirs(self._remote(""), exist_ok=True)
            return
        folder = self._local()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise Parts2WholeInputError(f"Cannot create {folder} ({error.strerror or error}); choose another -o folder.") from None
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise Parts2WholeInputError(f"Cannot write into {folder} (not a writable folder); choose another -o folder.")
        for leftover in folder.glob(f".*{TEMPORARY_MARKER}*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def exists(self, name: str) -> bool:
        if self.is_url:
            return self.fs.exists(self._remote(name))
        return self._local(name).is_file()

    def read_text(self, name: str) -> str | None:
        try:
            if self.is_url:
                return self.fs.cat_file(self._remote(name)).decode("utf-8")
            return self._local(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def write_bytes(self, name: str, data: bytes) -> None:
        """All or nothing: a reader sees the old file, or no file, or the whole new one.

        Local: a temporary file in the same folder, flushed, then renamed over the name. Object stores make
        an upload visible only once it is complete, so a URL is written directly (a shared filesystem mounted
        locally is a local path).
        """
        if self.is_url:
            self.fs.pipe_file(self._remote(name), data)
            return
        target = self._local(name)
        temporary = target.with_name(f".{target.name}{TEMPORARY_MARKER}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise


def completed_outputs(store: OutputStore, line: ManifestLine) -> tuple[str, list[str]]:
    """("complete", outputs) when this line's outputs are all there; ("missing", []) when they are not (or
    only partly: made again); ("other", outputs) when `<id>.json` was made from a different line."""
    text = store.read_text(f"{line.id}.json")
    if text is None:
        return "missing", []
    try:
        record = json.loads(text)
        outputs = [str(name) for name in record["outputs"]]
        made_from = record.get("batch", {}).get("line_key")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "missing", []  # not a JSON this batch wrote completely
    if made_from != line.key:
        return "other", outputs
    if not outputs or not all(store.exists(name) for name in outputs):
        return "missing", []
    return "complete", outputs


# ----------------------------------------------------------------------------------------------- results


@dataclasses.dataclass
class LineResult:
    """One line of results.jsonl."""

    id: str
    line: int
    status: str  # "ok" or "error"
    seconds: float
    message: str = ""
    outputs: list[str] = dataclasses.field(default_factory=list)
    encoded_references: bool = False  # True when this line ran the reference encoder (a cache miss)
    skipped: bool = False  # outputs were already complete: nothing was generated or written

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class BatchSummary:
    """What `run` did: every line's result, and the counts the CLI prints."""

    manifest: str
    out_dir: str
    engine: str
    results: list[LineResult]  # in manifest order; lines left for a later run (limit) are not in it
    lines: int  # lines in the manifest
    seconds: float
    workers: int = 1

    @property
    def ok(self) -> int:
        return sum(result.ok for result in self.results)

    @property
    def errors(self) -> list[LineResult]:
        return [result for result in self.results if not result.ok]

    @property
    def skipped(self) -> int:
        return sum(result.skipped for result in self.results)

    @property
    def generated(self) -> int:
        return sum(result.ok and not result.skipped for result in self.results)

    @property
    def encodes(self) -> int:
        """Reference encodings actually computed (studio cache misses), over all workers."""
        return sum(result.encoded_references for result in self.results)

    @property
    def left(self) -> int:
        """Lines not run this time (a `limit`); the next run does them."""
        return self.lines - len(self.results)

    @property
    def succeeded(self) -> bool:
        return not self.errors

    @property
    def lines_per_minute(self) -> float:
        ran = len([result for result in self.results if not result.skipped])
        return ran / self.seconds * 60 if self.seconds > 0 else 0.0

    def describe(self) -> str:
        parts = [f"{_count(self.lines, 'line')}: {self.ok} ok", f"{len(self.errors)} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} already complete (skipped)")
        if self.left:
            parts.append(f"{self.left} left for the next run")
        return (f"{', '.join(parts)}. {_count(self.encodes, 'reference encode')} for "
                f"{_count(self.generated, 'generated line')} "
                f"({self.engine}, {self.workers} worker{'s' if self.workers != 1 else ''}, "
                f"{self.seconds:.1f} s). Results: {OutputStore(self.out_dir).path(RESULTS_FILE)}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _write_results(store: OutputStore, results: dict[int, LineResult]) -> None:
    text = "".join(json.dumps(results[number].to_dict()) + "\n" for number in sorted(results))
    store.write_bytes(RESULTS_FILE, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------- one line


def generate_defaults() -> argparse.Namespace:
    """The options of `python -m parts2whole generate` with nothing given: the CLI's defaults, exactly."""
    from .. import cli

    return cli.build_parser().parse_args(["generate", "--pose", ""])


def line_arguments(line: ManifestLine, manifest_dir: Path, defaults: argparse.Namespace) -> argparse.Namespace:
    """The `generate` options a manifest line stands for (paths resolved against the manifest's folder)."""
    args = copy.copy(defaults)
    for key, value in line.values.items():
        if key in PART_KEYS:
            setattr(args, f"part_{PART_KEYS[key]}", str(resolve_path(value, manifest_dir)))
        elif key in MASK_KEYS:
            setattr(args, f"mask_{MASK_KEYS[key]}", str(resolve_path(value, manifest_dir)))
        elif key == "pose":
            args.pose = str(resolve_path(value, manifest_dir))
        elif key in SETTING_KEYS:
            setattr(args, SETTING_KEYS[key], value)  # checked by GenerationRequest.validated(), as in the app
    return args


class LineRunner:
    """Runs manifest lines on one Studio (one pipeline) and writes their outputs: the work of one worker."""

    def __init__(self, manifest: str, out_dir: str, *, weights: str | None = None, device: str | None = None,
                 dtype: str | None = None, cache_bytes: int | None = None):
        from .. import studio as studio_module

        self.manifest = str(manifest)
        self.manifest_dir = Path(manifest).expanduser().parent
        self.store = OutputStore(out_dir)
        kwargs = {} if cache_bytes is None else {"cache_bytes": cache_bytes}
        self.studio = studio_module.Studio(weights, device=device, dtype=dtype, **kwargs)
        self.defaults = generate_defaults()

    def load(self) -> None:
        """Load the model now (so the first line's time is the line's own)."""
        self.studio.pipeline()

    def run(self, line: ManifestLine) -> LineResult:
        """Generate one line and write its outputs; any failure becomes an error result, never an exception."""
        from .. import cli
        from .. import studio as studio_module

        started = time.perf_counter()
        try:
            args = line_arguments(line, self.manifest_dir, self.defaults)
            request = cli.load_request(args)  # a manifest's scheduler is one of the generate options
            result = self.studio.generate(request)
            paths = cli.output_paths(Path(f"{line.id}.png"), len(result.images))
            parameters = cli.output_parameters(result, paths, args) | {
                "batch": {"id": line.id, "manifest": self.manifest, "line": line.number, "line_key": line.key}}
            try:
                for image, path in zip(result.images, paths):
                    self.store.write_bytes(path.name, studio_module.png_bytes(image))
                # the JSON last: it is what says "this line is complete"
                self.store.write_bytes(f"{line.id}.json", studio_module.parameters_json(parameters).encode("utf-8"))
            except OSError as error:
                raise Parts2WholeInputError(
                    f"Cannot write {self.store.path(paths[0].name)} ({error.strerror or error}).") from None
            return LineResult(id=line.id, line=line.number, status=STATUS_OK, seconds=_since(started),
                              message=" ".join(result.notes), outputs=[path.name for path in paths],
                              encoded_references=not result.reused_references)
        except (Parts2WholeInputError, CheckpointError) as error:
            message = cli._one_line(error)
        except Exception as error:  # noqa: BLE001 - a bug or an environment problem: recorded, the batch goes on
            logger.debug("line %s failed", line.number, exc_info=True)
            message = f"failed ({type(error).__name__}): {cli._one_line(error)[:500]}"
        return LineResult(id=line.id, line=line.number, status=STATUS_ERROR, seconds=_since(started), message=message)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


# ----------------------------------------------------------------------------------------------- engines


@dataclasses.dataclass
class _Job:
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

    def runner(self) -> LineRunner:
        return LineRunner(self.manifest, self.out_dir, weights=self.weights, device=self.device, dtype=self.dtype,
                          cache_bytes=self.cache_bytes)


def _run_local(job: _Job, on_result: Callable[[LineResult], None]) -> int:
    """In this process: one pipeline, line after line, with a progress bar (lines, lines/min, ETA, encodes)."""
    from tqdm.auto import tqdm

    runner = job.runner()
    runner.load()  # a model that cannot load stops the batch here, with its one-line message
    bar = tqdm(total=job.lines, unit="line", disable=not job.progress, file=sys.stderr, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} lines [{elapsed}<{remaining}{postfix}]")
    encodes = 0
    with bar:
        for group in job.groups:
            for line in group:
                result = runner.run(line)
                encodes += result.encoded_references
                if not result.ok:
                    bar.write(f"line {result.line} ({result.id}): error: {result.message}", file=sys.stderr)
                on_result(result)
                bar.update(1)
                elapsed = bar.format_dict["elapsed"]
                per_minute = bar.n / elapsed * 60 if elapsed > 0 else 0.0
                bar.set_postfix_str(f"{per_minute:.1f} lines/min, {encodes} encodes", refresh=True)
    return 1


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the part that is needed
    except ImportError:
        raise Parts2WholeInputError(RAY_INSTALL_HINT) from None
    return ray


def ray_blocks(groups: list[list[ManifestLine]], workers: int) -> list[list[ManifestLine]]:
    """The Dataset's blocks: one per part set, a big set cut into at most `workers` slices.

    One block is one `map_batches` batch, run by one actor, so a part set is encoded once per actor that
    gets a slice of it; slicing a set bigger than its share keeps every GPU busy when a manifest is one
    outfit on many poses (an encode costs about one denoising step, a line tens of them).
    """
    total = sum(len(group) for group in groups)
    share = max(1, math.ceil(total / max(1, workers)))
    blocks = []
    for group in groups:
        slices = math.ceil(len(group) / share)
        size = math.ceil(len(group) / slices)
        blocks.extend(group[start:start + size] for start in range(0, len(group), size))
    return blocks


class RayLineWorker:
    """The callable class Ray Data runs on each actor: one LineRunner (one pipeline) per actor."""

    def __init__(self, job: dict[str, Any], torch_threads: int | None = None):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.load_error: str | None = None
        try:
            self.runner = LineRunner(**job)
            self.runner.load()
        except Exception as error:  # noqa: BLE001 - every line of this actor reports it instead
            from ..cli import _one_line

            self.load_error = f"the model could not be loaded: {_one_line(error)[:500]}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        rows = []
        for text in batch["line"]:
            line = ManifestLine.from_json(str(text))
            if self.load_error is not None:
                result = LineResult(id=line.id, line=line.number, status=STATUS_ERROR, seconds=0.0,
                                    message=self.load_error)
            else:
                result = self.runner.run(line)
            rows.append(result.to_dict())
        return {"result": [json.dumps(row) for row in rows]}


def _forwarded_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV_PREFIXES)}
    if "P2W_WEIGHTS_DIR" in env:
        env["P2W_WEIGHTS_DIR"] = str(Path(env["P2W_WEIGHTS_DIR"]).expanduser().resolve())
    # this checkout first on the actors' path (a cluster node without it installs parts2whole itself)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    return env


def _run_ray(job: _Job, on_result: Callable[[LineResult], None], *, address: str | None,
             workers: int | None) -> int:
    """Ray Data: the work as a Dataset of lines, `map_batches` through RayLineWorker on an actor pool."""
    ray = _import_ray()
    import pandas as pd

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": _forwarded_env()})
    try:
        resources = ray.cluster_resources()
        gpus = 0 if (job.device or "").startswith("cpu") else int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        if gpus:
            actors = min(workers or gpus, gpus)
            remote_args: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            torch_threads = None
        else:  # a CPU-only Ray: CPU actors sharing the CPUs Ray Data does not need
            actors = max(1, workers or 1)
            per_actor = max(1, (cpus - RAY_RESERVED_CPUS) // actors)
            remote_args = {"num_cpus": per_actor}
            torch_threads = per_actor
        blocks = ray_blocks(job.groups, actors)
        actors = max(1, min(actors, len(blocks)))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = job.progress
        dataset = ray.data.from_pandas([pd.DataFrame({"line": [line.to_json() for line in block]})
                                        for block in blocks])
        config = {"manifest": job.manifest, "out_dir": job.out_dir, "weights": job.weights, "device": job.device,
                  "dtype": job.dtype, "cache_bytes": job.cache_bytes}
        results = dataset.map_batches(
            RayLineWorker, fn_constructor_kwargs={"job": config, "torch_threads": torch_threads},
            batch_size=None, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            runtime_env={"env_vars": _forwarded_env()}, **remote_args)
        for row in results.iter_rows():
            result = LineResult(**json.loads(row["result"]))
            if not result.ok and job.progress:
                print(f"line {result.line} ({result.id}): error: {result.message}", file=sys.stderr)
            on_result(result)
        return actors
    finally:
        if started_here:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------- run


def run(manifest: str | os.PathLike, out_dir: str | os.PathLike, *, engine: str = "local",
        ray_address: str | None = None, weights: str | None = None, device: str | None = None,
        dtype: str | None = None, workers: int | None = None, limit: int | None = None, group: bool = True,
        progress: bool = True, cache_bytes: int | None = None,
        on_result: Callable[[LineResult], None] | None = None) -> BatchSummary:
    """Generate every line of `manifest` into `out_dir`; rerun to finish an interrupted batch.

    - engine: "local" (this process, one pipeline) or "ray" (Ray Data actors: one per GPU, or CPU actors on
      a CPU-only Ray; `ray_address` joins a cluster, none starts Ray on this machine; `workers` caps actors).
    - Lines whose outputs are complete are skipped and nothing of theirs is rewritten; a bad line becomes an
      error result with its message and the batch goes on.
    - limit: run at most this many lines (in work order), leave the rest for the next run.
    - group: order the work by part set (default), so each set is encoded once per worker; False keeps the
      manifest's order (the benchmark's comparison).
    - cache_bytes: the studio's reference-cache budget per worker (default: the studio's).
    Returns a BatchSummary; results.jsonl in `out_dir` holds the same per-line results.
    """
    if engine not in ENGINES:
        raise Parts2WholeInputError(f"Unknown engine {engine!r}; use {' or '.join(ENGINES)}.")
    if limit is not None and limit < 0:
        raise Parts2WholeInputError(f"limit must be 0 or more, got {limit}.")
    if workers is not None and workers < 1:
        raise Parts2WholeInputError(f"workers must be 1 or more, got {workers}.")
    if engine == "ray":
        _import_ray()  # say how to install it before anything else happens
    started = time.perf_counter()
    manifest_path = Path(manifest).expanduser().resolve() if Path(manifest).expanduser().exists() else Path(manifest)
    lines = read_manifest(manifest_path)
    store = OutputStore(out_dir)
    store.prepare()

    results: dict[int, LineResult] = {}
    pending: list[ManifestLine] = []
    for line in lines:
        if line.error is not None:
            results[line.number] = LineResult(id=line.id, line=line.number, status=STATUS_ERROR, seconds=0.0,
                                              message=line.error)
            continue
        state, outputs = completed_outputs(store, line)
        if state == "complete":
            results[line.number] = LineResult(id=line.id, line=line.number, status=STATUS_OK, seconds=0.0,
                                              message="already complete: skipped", outputs=outputs, skipped=True)
        elif state == "other":
            results[line.number] = LineResult(
                id=line.id, line=line.number, status=STATUS_ERROR, seconds=0.0, outputs=[],
                message=(f"line {line.number}: {store.path(line.id + '.json')} was made from a different line; "
                         "delete its outputs to make them again, or give this line another id."))
        else:
            pending.append(line)
    groups = group_by_part_set(pending, manifest_path.parent) if group else [[line] for line in pending]
    if limit is not None:
        groups = _first_lines(groups, limit)
    if progress:
        for number in sorted(results):
            if not results[number].ok:
                print(f"line {number} ({results[number].id}): error: {results[number].message}", file=sys.stderr)
        if any(result.skipped for result in results.values()):
            print(f"{sum(r.skipped for r in results.values())} lines already complete: skipped.", file=sys.stderr)

    job = _Job(manifest=str(manifest_path), out_dir=str(out_dir), groups=groups, weights=weights, device=device,
               dtype=dtype, cache_bytes=cache_bytes, progress=progress)
    last_write = [time.monotonic()]

    def record(result: LineResult) -> None:
        results[result.line] = result
        if on_result is not None:
            on_result(result)
        if time.monotonic() - last_write[0] >= RESULTS_WRITE_INTERVAL_S:
            _write_results(store, results)
            last_write[0] = time.monotonic()

    used = 1
    try:
        if job.lines:
            if engine == "local":
                used = _run_local(job, record)
            else:
                used = _run_ray(job, record, address=ray_address, workers=workers)
    finally:
        _write_results(store, results)  # also when interrupted: what was done is on record
    return BatchSummary(manifest=str(manifest_path), out_dir=str(out_dir), engine=engine,
                        results=[results[number] for number in sorted(results)], lines=len(lines),
                        seconds=time.perf_counter() - started, workers=used)


def _first_lines(groups: list[list[ManifestLine]], limit: int) -> list[list[ManifestLine]]:
    kept, left = [], limit
    for group in groups:
        if left <= 0:
            break
        kept.append(group[:left])
        left -= len(kept[-1])
    return kept


# ----------------------------------------------------------------------------------------------- CLI

EXAMPLE_MANIFEST = "assets/lookbook.jsonl"

DESCRIPTION = """\
Generate many portraits from one manifest: JSON Lines (one object per line) or CSV (a header row), one
portrait per line. Keys are the web app's /generate parameters: face, face_mask, hair_or_headwear,
hair_or_headwear_mask, upper_body_clothes, ..., shoes, shoes_mask, pose, prompt, negative_prompt, seed,
steps, guidance, height, width, num_images, fusion_blocks, and an optional id. Paths are relative to the
manifest; missing keys take the defaults of `generate`.

Writes <id>.png (<id>_0.png, <id>_1.png, ... for several images) and <id>.json per line into OUT_DIR, and
results.jsonl (id, status ok/error, seconds, message). Run the same command again to finish an interrupted
batch: complete lines are skipped, nothing is rewritten. Lines with the same parts share one reference
encoding. Exit code: 0 when no line failed, 2 when lines had bad input, 1 when a line failed otherwise.
"""

EPILOG = f"""\
examples:
  %(prog)s {EXAMPLE_MANIFEST} -o outputs/lookbook --weights tiny
  %(prog)s shop.csv -o outputs/shop --engine ray                    # every GPU of this machine
  %(prog)s shop.csv -o s3://bucket/shop --engine ray --ray-address auto   # a Ray cluster
"""


def add_parser(commands) -> argparse.ArgumentParser:
    """The `batch` subcommand, added to the CLI's subparsers."""
    parser = commands.add_parser(
        "batch", help="generate many portraits from a manifest (JSON Lines or CSV), locally or on Ray",
        usage="%(prog)s MANIFEST -o OUT_DIR [--engine local|ray] [--ray-address ADDR] [options]",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest: .jsonl (or .json/.ndjson) or .csv")
    parser.add_argument("-o", "--output", "--out-dir", dest="out_dir", metavar="OUT_DIR", required=True,
                        help="folder for the outputs; with Ray on a cluster, a shared folder or an object-store "
                             "URL (s3://..., gs://...) that every node can write")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: this process (default); ray: Ray Data actors, one per GPU")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="Ray cluster to join (e.g. auto, ray://head:10001); default: start Ray on this machine")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="Ray actors (default: one per GPU; one CPU actor on a CPU-only Ray)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="run at most N lines now, leave the rest for the next run")
    parser.add_argument("--weights", default=None,
                        help="Hub id, local folder, or 'tiny' (default: P2W_WEIGHTS, else the official weights)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", default=None, help="fp16, bf16 or fp32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, only the summary line")
    parser.set_defaults(handler=run_command)
    return parser


def run_command(args: argparse.Namespace) -> int:
    from ..cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

    summary = run(args.manifest, args.out_dir, engine=args.engine, ray_address=args.ray_address,
                  weights=args.weights, device=args.device, dtype=args.dtype, workers=args.workers,
                  limit=args.limit, progress=not args.quiet)
    print(summary.describe())
    if summary.succeeded:
        return EXIT_OK
    bad_input = all(not _is_unexpected_failure(result.message) for result in summary.errors)
    return EXIT_BAD_INPUT if bad_input else EXIT_FAILED


def _is_unexpected_failure(message: str) -> bool:
    return message.startswith(("failed (", "the model could not be loaded"))


def iter_results(out_dir: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """The records of `out_dir`/results.jsonl (for scripts that check a batch)."""
    text = OutputStore(out_dir).read_text(RESULTS_FILE) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
