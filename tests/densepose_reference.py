"""The DensePose reference case D1 (``../shared/densepose/D1``): its random weights, rebuilt with numpy.

``D1/weights_recipe.json`` says how detectron2's random checkpoint was made (per-tensor PCG64 streams
seeded from the tensor's name, uniform ranges, then deliberate edits); :func:`rebuild_d1_weights`
follows it and :func:`weights_digest` checks the result against the recipe's digest. Not a test
module (no ``test_`` prefix); the tests import it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np

SHARED_DENSEPOSE = Path(__file__).resolve().parent.parent.parent / "shared" / "densepose"
D1 = SHARED_DENSEPOSE / "D1"
SHAPES_FILE = SHARED_DENSEPOSE / "densepose_rcnn_R_50_FPN_s1x_shapes.json"
RECIPE_FILE = D1 / "weights_recipe.json"
#: detectron2 reads a .pkl as its own format when both keys are present (model-zoo files say this).
AUTHOR = "Detectron2 Model Zoo"
#: The 4x4 bilinear-like kernel the recipe multiplies into each ConvTranspose weight.
DECONV_PROFILE = np.array([0.25, 0.75, 0.75, 0.25], dtype=np.float32)


def shared_available() -> bool:
    return RECIPE_FILE.is_file() and SHAPES_FILE.is_file()


def _seed(version: str, seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{version}/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _uniform(version: str, seed: int, name: str, low: float, high: float, shape) -> np.ndarray:
    generator = np.random.Generator(np.random.PCG64(_seed(version, seed, name)))
    count = int(np.prod(shape)) if len(shape) else 1
    return (low + (high - low) * generator.random(count, dtype=np.float64)).astype(np.float32).reshape(shape)


def _index(spec) -> tuple:
    parts = []
    for entry in spec:
        if entry is None:
            parts.append(slice(None))
        elif isinstance(entry, list):
            parts.append(slice(entry[0], entry[1]))
        else:
            parts.append(int(entry))
    return tuple(parts)


def _value(name: str, shape, recipe: dict) -> np.ndarray:
    version, seed = recipe["version"], recipe["seed"]
    multiplier = recipe["weight_multipliers"].get(name, 1.0)
    if name.endswith(".norm.weight"):
        low, high = (0.1, 0.3) if fnmatch.fnmatch(name, "*.conv3.norm.weight") else (0.8, 1.2)
        return _uniform(version, seed, name, low, high, shape)
    if name.endswith((".norm.bias", ".norm.running_mean")):
        return _uniform(version, seed, name, -0.1, 0.1, shape)
    if name.endswith(".norm.running_var"):
        return _uniform(version, seed, name, 0.75, 1.25, shape)
    if name.startswith("roi_heads.densepose_predictor.") and name.endswith(".weight"):
        in_channels, out_channels = shape[0], shape[1]
        bound = multiplier * np.sqrt(6.0 / in_channels)
        ranks = _uniform(version, seed, name, -bound, bound, (in_channels, out_channels))
        kernel = np.outer(DECONV_PROFILE, DECONV_PROFILE).astype(np.float32)
        return (ranks[:, :, None, None] * kernel).astype(np.float32)
    if len(shape) >= 2:
        bound = multiplier * np.sqrt(6.0 / np.prod(shape[1:]))
        return _uniform(version, seed, name, -bound, bound, shape)
    centre = recipe["bias_centers"].get(name, 0.0)
    return _uniform(version, seed, name, centre - 0.05, centre + 0.05, shape)


def rebuild_d1_weights() -> dict[str, np.ndarray]:
    """name -> float32 array of D1's random checkpoint, in the shapes file's order."""
    recipe = json.loads(RECIPE_FILE.read_text())
    shapes = json.loads(SHAPES_FILE.read_text())["state_dict"]
    tensors = {name: _value(name, tuple(shape), recipe) for name, shape in shapes.items()}
    for edit in recipe["edits"]:
        tensors[edit["tensor"]][_index(edit["index"])] = np.asarray(edit["value"], dtype=np.float32)
    return tensors


def weights_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over the names (sorted) and little-endian float32 C-order bytes (the recipe's digest)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())
    return digest.hexdigest()


def expected_digest() -> str:
    return json.loads(RECIPE_FILE.read_text())["weights_digest"].split(":")[-1].strip()


def save_model_zoo_pickle(tensors: dict[str, np.ndarray], path: Path, *, extras: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``tensors`` in the model-zoo layout: pickle of {"model": {name: array}, "__author__": str}."""
    from collections import OrderedDict

    model = OrderedDict(tensors)
    model.update(extras or {})
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "__author__": AUTHOR}, handle, protocol=4)
    return path
