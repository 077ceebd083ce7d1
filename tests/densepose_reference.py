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


def reference_cases() -> list[Path]:
    """Every reference case folder (``D1``, and any other folder there with a ``case.json``)."""
    return sorted(path.parent for path in SHARED_DENSEPOSE.glob("*/case.json"))


def recipe_of(case: Path) -> Path:
    """The weights recipe of ``case``: its own, else D1's (the cases share D1's random weights)."""
    own = case / "weights_recipe.json"
    return own if own.is_file() else RECIPE_FILE


def score_threshold_of(case: Path) -> float:
    settings = json.loads((case / "case.json").read_text()).get("settings", {})
    return float(settings.get("overrides", {}).get("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.8))


def rebuild_d1_weights(recipe_file: Path = RECIPE_FILE) -> dict[str, np.ndarray]:
    """name -> float32 array of a case's random checkpoint (D1's by default), in the shapes file's order."""
    recipe = json.loads(Path(recipe_file).read_text())
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


def expected_digest(recipe_file: Path = RECIPE_FILE) -> str:
    return json.loads(Path(recipe_file).read_text())["weights_digest"].split(":")[-1].strip()


def save_model_zoo_pickle(tensors: dict[str, np.ndarray], path: Path, *, extras: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``tensors`` in the model-zoo layout: pickle of {"model": {name: array}, "__author__": str}."""
    from collections import OrderedDict

    model = OrderedDict(tensors)
    model.update(extras or {})
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "__author__": AUTHOR}, handle, protocol=4)
    return path


def compare_with_detectron2(case: Path, run, result) -> dict:
    """Our :class:`~preprocess.densepose.estimator.DensePoseRun` / result vs detectron2's files in ``case``.

    Returns the figures the parity tests bound (and ``bench/densepose_parity.py`` prints): box and
    score differences, RPN proposals matched as a set, raw predictor differences, agreement of the
    part index over the person's pixels, U / V differences where it agrees, the same on the IUV map.
    """
    from PIL import Image

    figures: dict = {"case": case.name}
    boxes, scores = np.load(case / "detections_boxes_xyxy.npy"), np.load(case / "detections_scores.npy")
    ours_boxes, ours_scores = run.boxes.cpu().numpy(), run.scores.cpu().numpy()
    figures["detections"] = (len(ours_boxes), len(boxes))
    same = len(ours_boxes) == len(boxes)
    figures["box_max_abs_px"] = float(np.abs(ours_boxes - boxes).max()) if same and len(boxes) else (0.0 if same else float("inf"))
    figures["score_max_abs"] = float(np.abs(ours_scores - scores).max()) if same and len(boxes) else (0.0 if same else float("inf"))
    proposals_file = case / "rpn_proposals_xyxy.npy"
    if proposals_file.is_file():
        reference = np.load(proposals_file)
        ours = run.proposals.cpu().numpy()
        if len(ours) and len(reference):
            nearest = np.abs(ours[:, None, :] - reference[None, :, :]).max(axis=2).min(axis=1)
            figures["proposals_with_twin"] = float((nearest <= 0.5).mean())
        figures["proposal_counts"] = (len(ours), len(reference))
    if not len(boxes) or run.charts is None:
        return figures
    for index, name in enumerate(("coarse_segm", "fine_segm", "u", "v")):
        raw_file = case / f"top_raw_{name}.npy"
        if raw_file.is_file():
            figures[f"raw_{name}_max_abs"] = float(np.abs(run.raw[index].cpu().numpy() - np.load(raw_file)).max())
    labels, u, v = (np.load(case / f"top_{name}.npy") for name in ("labels_I", "U", "V"))
    charts = run.charts
    figures["box_xywh_int"] = ([charts.x, charts.y, charts.labels.shape[1], charts.labels.shape[0]],
                               [int(value) for value in json.loads((case / "case.json").read_text())["results"]["top_box_xywh_int"]])
    if charts.labels.shape == labels.shape:
        person = (labels > 0) | (charts.labels > 0)
        agree = charts.labels == labels
        figures["label_agreement"] = float(agree[person].mean())
        both = agree & (labels > 0)
        figures["u_max_abs"] = float(np.abs(charts.u - u)[both].max())
        figures["v_max_abs"] = float(np.abs(charts.v - v)[both].max())
    reference_map = np.asarray(Image.open(case / "iuv.png").convert("RGB")).astype(int)
    ours_map = np.asarray(result.map).astype(int)
    if ours_map.shape == reference_map.shape:
        person = (reference_map[..., 2] > 0) | (ours_map[..., 2] > 0)
        agree = ours_map[..., 2] == reference_map[..., 2]
        figures["map_label_agreement"] = float(agree[person].mean())
        figures["map_uv_max_abs_levels"] = int(np.abs(ours_map - reference_map)[agree & (reference_map[..., 2] > 0)].max())
        figures["map_background_clean"] = bool((ours_map[~person] == 0).all())
    return figures
