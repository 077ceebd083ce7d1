"""Reading a batch manifest (JSON Lines or CSV): one `ManifestLine` per line, with its id, its values, its
content key, or the one-line reason it cannot run; and a line's values as the inputs of one generation.

Manifest keys are the web app's `/generate` parameter names (one vocabulary for the app, the API client and
batches); the values and defaults are those of `python -m parts2whole generate`. A line with a `source`
is an edit (`source`, `change`, `region`, `strength` added, as `python -m parts2whole edit`).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import Parts2WholeInputError
from ..core.labels import PART_LABELS
from ..studio.inputs import SETTING_NAMES, GenerationInputs

#: What `<id>.png` may be called: a plain file name on every filesystem and object store.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: Hex digits of the content hash that names a line without an `id` (48 bits: no clash in any real manifest).
HASH_ID_DIGITS = 12
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)

#: Manifest key -> part label, and mask key -> part label: the `/generate` endpoint's names.
PART_KEYS = {label.replace(" ", "_"): label for label in PART_LABELS}
MASK_KEYS = {f"{key}_mask": label for key, label in PART_KEYS.items()}
#: Manifest keys of the settings: the names of `GenerationInputs` (and of the `generate` options).
SETTING_KEYS = SETTING_NAMES
#: A line with a `source` is an edit (batch/edit_line.py): these keys mirror `python -m parts2whole edit`.
EDIT_FILE_KEYS = ("source", "region")
FILE_KEYS = (*PART_KEYS, *MASK_KEYS, "pose", *EDIT_FILE_KEYS)
MANIFEST_KEYS = ("id", *(key for part in PART_KEYS for key in (part, f"{part}_mask")), "pose", *SETTING_KEYS,
                 *EDIT_FILE_KEYS, "change", "strength")
#: Keys whose value is part of the reference encoding (with the part and mask files): they define a part set.
ENCODING_SETTING_KEYS = ("height", "width", "fusion_blocks")


def _normalise_key(key: str) -> str:
    """ "Upper-Body-Clothes " -> "upper_body_clothes" (CSV headers are typed by people)."""
    return re.sub(r"[\s-]+", "_", str(key).strip().lower())


def canonical_value(value: Any) -> str:
    """7, "7" and " 7 " are the same value: a line's key does not depend on JSON Lines vs CSV."""
    return value.strip() if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


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
    canonical = {key: canonical_value(value) for key, value in values.items() if key != "id"}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- reading

RawLine = tuple[int, dict[str, Any] | None, str | None]


def _raw_lines(path: Path) -> Iterator[RawLine]:
    """(line number, values or None, error or None) for each non-blank line of a JSON Lines or CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise Parts2WholeInputError(f"Manifest {path} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
    suffix = path.suffix.lower()
    is_csv = suffix in CSV_SUFFIXES or (suffix not in JSONL_SUFFIXES and not text.lstrip().startswith("{"))
    return _csv_lines(text) if is_csv else _json_lines(text)


def _json_lines(text: str) -> Iterator[RawLine]:
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


def _csv_lines(text: str) -> Iterator[RawLine]:
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
        line_id = canonical_value(given_id) if given_id is not None else key[:HASH_ID_DIGITS]
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
    for mask_key in MASK_KEYS:
        part_key = mask_key.removesuffix("_mask")
        if mask_key in line.values and part_key not in line.values:
            return f"{where}: {mask_key} was given without {part_key}; add the {part_key} image or drop the mask."
    edit_only = [key for key in ("region", "change", "strength") if key in line.values]
    if edit_only and "source" not in line.values:
        return f"{where}: {edit_only[0]} is for an edit; add the source photo (source) or drop {edit_only[0]}."
    if "pose" not in line.values and "source" not in line.values:
        return f"{where}: no pose: add a pose key with the pose map image (a DensePose rendering of the body)."
    if line.id in first_use:
        how = "give each line its own id" if given_id is not None else "the line repeats it; give it an id or another seed"
        return f"{where}: id {line.id!r} is already used by line {first_use[line.id]}; {how}."
    return None


# ----------------------------------------------------------------------------------------------- one line


def resolve_path(value: str, manifest_dir: Path) -> Path:
    """A manifest path: absolute as it is, else relative to the manifest's folder."""
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else manifest_dir / path


def line_inputs(line: ManifestLine, manifest_dir: Path) -> GenerationInputs:
    """The generation a manifest line stands for (paths resolved against the manifest's folder); keys it
    leaves out take the defaults of `generate`, and its settings are checked when its request is loaded."""
    inputs = GenerationInputs()
    for key, value in line.values.items():
        if key in PART_KEYS:
            inputs.parts[PART_KEYS[key]] = str(resolve_path(value, manifest_dir))
        elif key in MASK_KEYS:
            inputs.masks[MASK_KEYS[key]] = str(resolve_path(value, manifest_dir))
        elif key == "pose":
            inputs.pose = str(resolve_path(value, manifest_dir))
        elif key in SETTING_KEYS:
            setattr(inputs, key, value)  # checked by GenerationRequest.validated(), as in the app
    return inputs
