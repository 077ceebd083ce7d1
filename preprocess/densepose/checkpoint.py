"""Reading detectron2 model-zoo checkpoints safely, and checking them strictly.

A model-zoo ``.pkl`` is a Python pickle of ``{"model": {name: numpy float32 array}, "__author__": str}``.
A pickle is a program: ``pickle.load`` would run whatever callables it names. :class:`ArrayUnpickler`
resolves only the handful of globals that rebuild numpy arrays and dtypes (plus ``OrderedDict`` and
the latin-1 ``_codecs.encode`` that protocol-2 pickles use for bytes) and refuses any other global
with :class:`~parts2whole.core.errors.CheckpointError` *before* anything is called, so a crafted file
cannot run code. Arrays must be plain numeric arrays (no object dtype).

The tensors are then checked against the checkpoint's table of names and shapes
(``checkpoint_shapes.json``, a copy of the shared shapes file, shipped with the package): a missing,
unexpected or mis-shaped tensor is a ``CheckpointError`` that names it. The only extras accepted are
the anchor generator's ``cell_anchors.{0..4}`` ([3, 4] each) that detectron2 saved in early 2020,
and only when they equal the anchors this implementation computes.

After a successful check of a ``.pkl``, a safetensors copy is cached in the weights folder
(``parts2whole.core.weights``), so later loads memory-map that instead of unpickling; the copy records the size and
modification time of the file it came from and is ignored once they change.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from parts2whole.core.errors import CheckpointError
from parts2whole.core.weights import weights_dir

from .model import ANCHOR_SIZES, cell_anchors

logger = logging.getLogger(__name__)

#: The packaged copy of the shared name -> shape table of the real checkpoint.
SHAPES_FILE = Path(__file__).with_name("checkpoint_shapes.json")
#: Key of the tensor dict in a detectron2 checkpoint.
MODEL_KEY = "model"
#: Extra tensors old detectron2 versions saved: the RPN's cell anchors, one [A, 4] per level.
CELL_ANCHORS_PREFIX = "proposal_generator.anchor_generator.cell_anchors."
#: Absolute tolerance (pixels) when comparing stored cell anchors with the computed ones.
CELL_ANCHORS_TOLERANCE = 1e-3
#: The cached safetensors conversion of a ``.pkl``: ``<weights dir>/densepose/converted/<stem>-<key>.pkl.safetensors``.
CONVERTED_SUBFOLDER = "densepose/converted"
CONVERTED_SUFFIX = ".safetensors"
#: Hex digits of the source path's hash in the conversion's name.
CONVERTED_KEY_CHARS = 16
#: Metadata keys of the cached conversion.
SOURCE_SIZE_KEY, SOURCE_MTIME_KEY = "source_size", "source_mtime_ns"
#: How many names an error message lists before "and N more".
NAMES_SHOWN = 8


# --- the restricted unpickler ----------------------------------------------------------------------


def _reconstruct(subtype, shape, dtype_code):
    """numpy's ``_reconstruct``, for plain ``ndarray`` only (a subclass could carry code in ``__setstate__``)."""
    if subtype is not np.ndarray:
        raise CheckpointError(f"the pickle rebuilds an array of type {subtype!r}, not numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _dtype(spec, align=False, copy=False):
    dtype = np.dtype(spec, align, copy)
    if dtype.hasobject:
        raise CheckpointError("the pickle holds an object array")
    return dtype


def _scalar(dtype, data):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, str)):
        raise CheckpointError("the pickle holds a numpy scalar of an unsupported kind")
    raw = data.encode("latin1") if isinstance(data, str) else data
    return np.frombuffer(raw, dtype=dtype, count=1)[0]


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only str -> latin-1 bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("the pickle calls _codecs.encode in an unexpected way")
    return text.encode("latin1")


#: (module, name) -> what the unpickler may resolve it to. Nothing else is ever resolved.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can only build numpy arrays, dtypes and plain containers."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refused to load {module}.{name}: a DensePose checkpoint may only hold numpy arrays"
            ) from None

    def persistent_load(self, pid):
        raise CheckpointError("refused a persistent reference: a DensePose checkpoint may only hold numpy arrays")


def restricted_load(data: bytes | io.BufferedIOBase) -> Any:
    """Unpickle ``data`` (bytes or a binary file) with :class:`ArrayUnpickler` (latin-1 for Python 2 strings)."""
    handle = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    return ArrayUnpickler(handle, encoding="latin1").load()


def read_pickle_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The ``"model"`` tensors of a detectron2 ``.pkl``, read without running any code from it."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            content = restricted_load(handle)
    except CheckpointError as error:
        raise CheckpointError(f"DensePose checkpoint {path} is unsafe: {error}") from None
    except Exception as error:  # noqa: BLE001 - truncated / not a pickle: unusable either way
        raise CheckpointError(f"DensePose checkpoint {path} cannot be read ({type(error).__name__}: {error}).") from None
    if isinstance(content, dict) and isinstance(content.get(MODEL_KEY), dict):
        content = content[MODEL_KEY]
    if not isinstance(content, dict):
        raise CheckpointError(f"DensePose checkpoint {path} does not hold a dict of tensors.")
    arrays: dict[str, np.ndarray] = {}
    for name, value in content.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise CheckpointError(f"DensePose checkpoint {path}: entry {name!r} is not a numeric array.")
        arrays[name] = value
    return arrays


# --- reading any supported file --------------------------------------------------------------------


def _converted_path(path: Path) -> Path:
    """Where the conversion of ``path`` is cached: ``<weights dir>/densepose/converted/``, one file per
    source path (so two ``.pkl`` files of one name never share it), never beside a file that may lie in
    a read-only or installed location."""
    source = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:CONVERTED_KEY_CHARS]
    return weights_dir() / CONVERTED_SUBFOLDER / f"{path.stem}-{source}{path.suffix}{CONVERTED_SUFFIX}"


def _source_stamp(path: Path) -> dict[str, str]:
    stat = path.stat()
    return {SOURCE_SIZE_KEY: str(stat.st_size), SOURCE_MTIME_KEY: str(stat.st_mtime_ns)}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open  # heavy: imported on first use, keeps importing this package light

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            return {name: handle.get_tensor(name) for name in handle.keys()}, metadata
    except Exception as error:  # noqa: BLE001 - damaged file
        raise CheckpointError(f"DensePose checkpoint {path} cannot be read ({type(error).__name__}: {error}).") from None


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Float32 CPU tensors of a model-zoo ``.pkl`` or a ``.safetensors`` file (not yet checked).

    A ``.pkl`` with an up-to-date cached conversion next to it is read from that conversion.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"DensePose checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":
        tensors, _ = _read_safetensors(path)
    else:
        converted = _converted_path(path)
        if converted.is_file():
            tensors, metadata = _read_safetensors(converted)
            if {key: metadata.get(key) for key in (SOURCE_SIZE_KEY, SOURCE_MTIME_KEY)} == _source_stamp(path):
                return {name: tensor.float() for name, tensor in tensors.items()}
        tensors = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in read_pickle_checkpoint(path).items()}
    return {name: tensor.float() for name, tensor in tensors.items()}


def cache_conversion(path: str | Path, tensors: dict[str, torch.Tensor]) -> Path | None:
    """Write the checked tensors of ``path`` (a ``.pkl``) as safetensors in the weights folder; None if not possible."""
    from safetensors.torch import save_file  # heavy: imported on first use, keeps importing this package light

    path = Path(path)
    if path.suffix == ".safetensors":
        return None
    target = _converted_path(path)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(partial), metadata=_source_stamp(path))
        os.replace(partial, target)
    except OSError as error:  # read-only folder, full disk: the .pkl still works
        logger.info("Not caching a safetensors copy of %s (%s)", path, error)
        partial.unlink(missing_ok=True)
        return None
    return target


# --- strict check ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the real checkpoint (the packaged table)."""
    table = json.loads(SHAPES_FILE.read_text())
    return {name: tuple(shape) for name, shape in table["state_dict"].items()}


def _listed(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def check_state_dict(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of ``expected`` from ``tensors``, after a strict check of names and shapes.

    Accepts exactly the cell-anchor extras (``cell_anchors.{0..4}``) when they equal the computed
    anchors; any other unexpected name, a missing name or a wrong shape raises ``CheckpointError``.
    """
    expected_anchors = {f"{CELL_ANCHORS_PREFIX}{level}": cell_anchors(size) for level, size in enumerate(ANCHOR_SIZES)}
    problems = []
    missing = [name for name in expected if name not in tensors]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listed(missing)}")
    unexpected, wrong_anchors = [], []
    for name, tensor in tensors.items():
        if name in expected:
            continue
        anchors = expected_anchors.get(name)
        if anchors is None:
            unexpected.append(name)
        elif tuple(tensor.shape) != tuple(anchors.shape) or not torch.allclose(tensor.float(), anchors, rtol=0, atol=CELL_ANCHORS_TOLERANCE):
            wrong_anchors.append(name)
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_listed(unexpected)}")
    if wrong_anchors:
        problems.append(f"anchors that differ from this model's ({_listed(wrong_anchors)})")
    misshaped = [f"{name} is {list(tensors[name].shape)}, expected {list(shape)}"
                 for name, shape in expected.items() if name in tensors and tuple(tensors[name].shape) != tuple(shape)]
    if misshaped:
        problems.append("wrong shape: " + "; ".join(misshaped[:NAMES_SHOWN]) + (f" and {len(misshaped) - NAMES_SHOWN} more" if len(misshaped) > NAMES_SHOWN else ""))
    if problems:
        raise CheckpointError(f"DensePose {source} does not fit densepose_rcnn_R_50_FPN_s1x: " + "; ".join(problems) + ".")
    return {name: tensors[name] for name in expected}
