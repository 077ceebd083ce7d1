"""DensePose (preprocess.densepose): parity with detectron2 on D1, strict and safe loading, the API.

The parity tests rebuild D1's random checkpoint from its recipe (digest checked), write it in the
model-zoo pickle layout and load it through the real loading path (restricted unpickler, strict
check, meta build); detectron2's own outputs in ``../shared/densepose/D1`` are the reference. Any
other case folder next to D1 (same layout, a ``case.json``) runs through the same comparison.
"""

from __future__ import annotations

import io
import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as functional
from PIL import Image

import preprocess.densepose.checkpoint as checkpoint_module
import preprocess.densepose.estimator as estimator_module
from densepose_reference import (
    D1,
    RECIPE_FILE,
    SHAPES_FILE,
    compare_with_detectron2,
    expected_digest,
    rebuild_d1_weights,
    recipe_of,
    reference_cases,
    save_model_zoo_pickle,
    score_threshold_of,
    shared_available,
    weights_digest,
)
from parts2whole.core.errors import CheckpointError, Parts2WholeInputError
from parts2whole.core.weights import weights_dir
from preprocess.densepose import (
    DENSEPOSE_FILENAME,
    DENSEPOSE_REPO_ID,
    DENSEPOSE_REVISION,
    NO_PERSON_MESSAGE,
    DensePoseEstimator,
    DensePoseRCNN,
    DensePoseResult,
    NoPersonFound,
    check_state_dict,
    densepose_map,
    expected_shapes,
    load_densepose,
    load_tiny_densepose,
    restricted_load,
)
from preprocess.densepose.checkpoint import CELL_ANCHORS_PREFIX, SHAPES_FILE as PACKAGED_SHAPES, read_checkpoint
from preprocess.densepose.estimator import PersonCharts, iuv_map, people_note, resized_size
from preprocess.densepose.model import ANCHOR_SIZES, cell_anchors
from preprocess.densepose.tiny import TINY_CONFIG, build_model, tiny_shapes, tiny_state_dict

needs_shared = pytest.mark.skipif(not shared_available(), reason="../shared/densepose is not here")

#: The issue's parity bar.
BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-3
LABEL_AGREEMENT = 0.995
UV_TOLERANCE = 2 / 255


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def d1_checkpoint(tmp_path_factory) -> Path:
    """D1's random checkpoint as a model-zoo .pkl, with the 2020-era cell_anchors extras."""
    tensors = rebuild_d1_weights()
    assert weights_digest(tensors) == expected_digest()
    extras = {f"{CELL_ANCHORS_PREFIX}{level}": cell_anchors(size).numpy() for level, size in enumerate(ANCHOR_SIZES)}
    return save_model_zoo_pickle(tensors, tmp_path_factory.mktemp("densepose") / "model_final_162be9.pkl", extras=extras)


@pytest.fixture(scope="session")
def d1_estimator(d1_checkpoint) -> DensePoseEstimator:
    return load_densepose(d1_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def d1_run(d1_estimator):
    return d1_estimator.run(D1 / "input.jpg")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> DensePoseEstimator:
    return load_tiny_densepose(tmp_path_factory.mktemp("densepose-tiny"))


def photo(width=320, height=480, mode="RGB") -> Image.Image:
    """A grey backdrop with a dark figure-shaped block."""
    canvas = np.full((height, width, 3), 200, dtype=np.uint8)
    canvas[height // 8 : height * 7 // 8, width // 3 : width * 2 // 3] = (60, 40, 30)
    return Image.fromarray(canvas).convert(mode)


# --- parity with detectron2 on D1 (and any other reference case next to it) -------------------------


CASES = reference_cases() if shared_available() else []


@pytest.fixture(scope="session")
def case_estimators(tmp_path_factory, d1_checkpoint):
    """One loaded estimator per weights recipe (the cases share D1's unless they bring their own)."""
    loaded: dict[Path, Path] = {RECIPE_FILE: d1_checkpoint}

    def estimator_for(case: Path) -> DensePoseEstimator:
        recipe = recipe_of(case)
        if recipe not in loaded:
            tensors = rebuild_d1_weights(recipe)
            assert weights_digest(tensors) == expected_digest(recipe)
            loaded[recipe] = save_model_zoo_pickle(tensors, tmp_path_factory.mktemp(case.name) / "model_final_162be9.pkl")
        estimator = load_densepose(loaded[recipe], device="cpu")
        return DensePoseEstimator(estimator.model, weights=estimator.weights, score_threshold=score_threshold_of(case))

    return estimator_for


@pytest.fixture(scope="session", params=CASES, ids=[case.name for case in CASES])
def case_figures(request, case_estimators, d1_estimator, d1_run):
    case = request.param
    if case == D1 and score_threshold_of(case) == d1_estimator.score_threshold:
        estimator, run = d1_estimator, d1_run
    else:
        estimator = case_estimators(case)
        run = estimator.run(case / "input.jpg")
    result = estimator.result(run) if run.charts is not None else None
    return compare_with_detectron2(case, run, result)


@needs_shared
def test_detections_match_detectron2(case_figures):
    assert case_figures["detections"][0] == case_figures["detections"][1]
    assert case_figures["box_max_abs_px"] <= BOX_TOLERANCE_PX
    assert case_figures["score_max_abs"] <= SCORE_TOLERANCE


@needs_shared
def test_rpn_proposals_match_as_a_set(case_figures):
    if "proposal_counts" not in case_figures:
        pytest.skip("this case has no RPN proposals")
    assert case_figures["proposal_counts"][0] == case_figures["proposal_counts"][1]
    # Order may swap among near-equal logits; nearly every proposal of ours has a twin in detectron2's.
    assert case_figures["proposals_with_twin"] >= 0.99


@needs_shared
def test_raw_charts_match_detectron2(case_figures):
    raw = {name: value for name, value in case_figures.items() if name.startswith("raw_")}
    if not raw:
        pytest.skip("this case has no raw predictor outputs (or no person)")
    assert all(value <= 1e-2 for value in raw.values()), raw


@needs_shared
def test_part_index_and_uv_match_detectron2(case_figures):
    if "box_xywh_int" not in case_figures:
        pytest.skip("no person in this case")
    ours, theirs = case_figures["box_xywh_int"]
    assert ours == theirs
    assert case_figures["label_agreement"] >= LABEL_AGREEMENT
    assert case_figures["u_max_abs"] <= UV_TOLERANCE and case_figures["v_max_abs"] <= UV_TOLERANCE


@needs_shared
def test_iuv_map_matches_detectron2(case_figures):
    if "box_xywh_int" not in case_figures:
        pytest.skip("no person in this case")
    assert case_figures["map_label_agreement"] >= LABEL_AGREEMENT
    assert case_figures["map_uv_max_abs_levels"] <= 2
    assert case_figures["map_background_clean"]


@needs_shared
def test_d1_result_fields(d1_estimator, d1_run):
    result = d1_estimator.result(d1_run)  # what d1_estimator(photo) returns, without a second run
    assert result.map.mode == "RGB" and result.map.size == (512, 768)
    assert result.num_people == 1 and result.note is None
    assert result.weights.endswith("model_final_162be9.pkl")
    np.testing.assert_allclose(result.box, np.load(D1 / "detections_boxes_xyxy.npy")[0], atol=BOX_TOLERANCE_PX)
    assert abs(result.score - float(np.load(D1 / "detections_scores.npy")[0])) <= SCORE_TOLERANCE


@needs_shared
def test_real_size_model_finds_nobody_on_a_plain_backdrop(d1_estimator):
    """D1's weights see 'person' in dark or colourful pixels; a light-grey backdrop has none."""
    with pytest.raises(NoPersonFound, match="No person found"):
        d1_estimator(Image.new("RGB", (400, 600), (215, 215, 215)))


@needs_shared
def test_checked_pickle_is_cached_as_safetensors(d1_checkpoint, d1_estimator):
    cached = checkpoint_module._converted_path(d1_checkpoint)
    assert cached.is_file() and cached.is_relative_to(weights_dir())
    from_cache = read_checkpoint(d1_checkpoint)
    assert len(from_cache) == len(expected_shapes())
    state = d1_estimator.model.state_dict()
    for name in ("backbone.bottom_up.stem.conv1.weight", "roi_heads.densepose_predictor.u_lowres.bias"):
        torch.testing.assert_close(from_cache[name], state[name].cpu().contiguous())


@needs_shared
def test_loaded_model_has_no_meta_tensors(d1_estimator):
    tensors = list(d1_estimator.model.parameters()) + list(d1_estimator.model.buffers())
    assert tensors and not any(tensor.is_meta for tensor in tensors)


# --- the name / shape table --------------------------------------------------------------------------


@needs_shared
def test_packaged_shape_table_equals_the_shared_file():
    shared = json.loads(SHAPES_FILE.read_text())
    packaged = json.loads(PACKAGED_SHAPES.read_text())
    assert packaged["state_dict"] == shared["state_dict"]
    assert list(packaged["state_dict"]) == list(shared["state_dict"])
    assert packaged["known_extras"] == shared["likely_extra_keys_in_the_real_file"]


def test_model_state_dict_has_the_checkpoint_names_and_shapes():
    with torch.device("meta"):
        model = DensePoseRCNN()
    assert {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()} == expected_shapes()
    assert sum(tensor.numel() for tensor in model.state_dict().values()) == 63_927_330


def test_cell_anchors_are_detectron2s():
    anchors = cell_anchors(32)
    half_wide = np.sqrt(32**2 / 0.5) / 2
    np.testing.assert_allclose(anchors[0].numpy(), [-half_wide, -half_wide / 2, half_wide, half_wide / 2], rtol=1e-6)
    np.testing.assert_allclose(anchors[1].numpy(), [-16, -16, 16, 16])


# --- strict loading ----------------------------------------------------------------------------------


def full_size_stand_in() -> dict[str, torch.Tensor]:
    """Every tensor of the real checkpoint on the meta device (shapes only), plus the cell anchors."""
    state = {name: torch.empty(shape, device="meta") for name, shape in expected_shapes().items()}
    for level, size in enumerate(ANCHOR_SIZES):
        state[f"{CELL_ANCHORS_PREFIX}{level}"] = cell_anchors(size)
    return state


def test_strict_check_accepts_the_full_size_layout_and_drops_the_anchor_extras():
    checked = check_state_dict(full_size_stand_in(), expected_shapes())
    assert set(checked) == set(expected_shapes())


def test_strict_check_accepts_a_file_without_the_anchor_extras():
    state = {name: torch.empty(shape, device="meta") for name, shape in expected_shapes().items()}
    assert set(check_state_dict(state, expected_shapes())) == set(expected_shapes())


def test_strict_check_names_a_missing_tensor():
    state = full_size_stand_in()
    del state["roi_heads.densepose_predictor.v_lowres.bias"]
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*roi_heads\.densepose_predictor\.v_lowres\.bias"):
        check_state_dict(state, expected_shapes())


def test_strict_check_names_an_unexpected_tensor():
    state = full_size_stand_in()
    state["roi_heads.mask_head.predictor.weight"] = torch.empty(1, 2, 3, device="meta")
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensor.*roi_heads\.mask_head\.predictor\.weight"):
        check_state_dict(state, expected_shapes())


def test_strict_check_names_a_misshaped_tensor():
    state = full_size_stand_in()
    state["roi_heads.box_predictor.cls_score.weight"] = torch.empty(81, 1024, device="meta")
    with pytest.raises(CheckpointError, match=r"roi_heads\.box_predictor\.cls_score\.weight is \[81, 1024\], expected \[2, 1024\]"):
        check_state_dict(state, expected_shapes())


def test_strict_check_refuses_cell_anchors_that_differ_from_the_computed_ones():
    state = full_size_stand_in()
    state[f"{CELL_ANCHORS_PREFIX}2"] = cell_anchors(ANCHOR_SIZES[2]) * 2
    with pytest.raises(CheckpointError, match=r"anchors that differ.*cell_anchors\.2"):
        check_state_dict(state, expected_shapes())
    state[f"{CELL_ANCHORS_PREFIX}2"] = torch.zeros(4, 4)
    with pytest.raises(CheckpointError, match=r"cell_anchors\.2"):
        check_state_dict(state, expected_shapes())
    state = full_size_stand_in()
    state[f"{CELL_ANCHORS_PREFIX}5"] = torch.zeros(3, 4)
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensor.*cell_anchors\.5"):
        check_state_dict(state, expected_shapes())


def test_loading_a_partial_model_zoo_file_names_what_is_missing(tmp_path):
    path = save_model_zoo_pickle({"backbone.fpn_lateral2.bias": np.zeros(256, np.float32)}, tmp_path / "partial.pkl")
    with pytest.raises(CheckpointError, match=r"missing 334 tensor"):
        load_densepose(path, device="cpu")


def test_loading_a_missing_or_damaged_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_densepose(tmp_path / "nothing.pkl")
    damaged = tmp_path / "damaged.pkl"
    damaged.write_bytes(pickle.dumps({"model": {}}, protocol=4)[:-5])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_densepose(damaged)


# --- the restricted unpickler ------------------------------------------------------------------------


class _RunsCode:
    """Unpickling this with plain pickle would create ``target`` (a stand-in for arbitrary code)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        import os

        return os.makedirs, (str(self.target),)


def test_unpickler_refuses_a_reduce_payload_without_running_it(tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps({"model": {"x": np.zeros(2, np.float32), "y": _RunsCode(target)}, "__author__": "x"})
    with pytest.raises(CheckpointError, match="refused to load posix.makedirs|refused to load os.makedirs"):
        restricted_load(payload)
    assert not target.exists()
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError, match="unsafe"):
        load_densepose(path, device="cpu")
    assert not target.exists()


class _ArraySubclass(np.ndarray):
    """An array type whose class (and so its methods) the unpickler must never resolve."""


def test_unpickler_refuses_array_subclasses_and_object_arrays():
    with pytest.raises(CheckpointError, match="_ArraySubclass"):
        restricted_load(pickle.dumps(np.zeros(3, np.float32).view(_ArraySubclass)))
    with pytest.raises(CheckpointError):
        restricted_load(pickle.dumps(np.array([object()], dtype=object)))


def test_unpickler_reads_arrays_in_both_pickle_layouts():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float32(1.5)}
    for protocol in (2, 4):
        loaded = restricted_load(pickle.dumps({"model": arrays, "__author__": "Detectron2 Model Zoo"}, protocol=protocol))
        np.testing.assert_array_equal(loaded["model"]["a"], arrays["a"])
        assert loaded["model"]["b"] == np.float32(1.5)
        assert loaded["__author__"] == "Detectron2 Model Zoo"


# --- the map encoding --------------------------------------------------------------------------------


def test_iuv_map_encoding_blue_i_green_u_red_v_truncated():
    labels = np.array([[0, 3], [24, 1]], dtype=np.uint8)
    u = np.array([[0.0, 0.5], [1.2, 0.999]], dtype=np.float32)
    v = np.array([[0.0, -0.3], [0.25, 0.0039]], dtype=np.float32)
    image = iuv_map(PersonCharts(labels, u, v, x=1, y=2), (4, 5))
    pixels = np.asarray(image)
    assert image.size == (4, 5) and image.mode == "RGB"
    assert pixels[2, 2].tolist() == [0, 127, 3]  # red = V 0 (clamped), green = trunc(127.5), blue = I
    assert pixels[3, 1].tolist() == [63, 255, 24]
    assert pixels[3, 2].tolist() == [0, 254, 1]
    assert pixels[2, 1].tolist() == [0, 0, 0]
    mask = np.ones((5, 4), bool)
    mask[2:4, 1:3] = False
    assert (pixels[mask] == 0).all()


def test_resize_rule_is_detectron2s():
    assert resized_size(768, 512) == (1200, 800)
    assert resized_size(1101, 750) == (1174, 800)
    assert resized_size(400, 3000) == (178, 1333)
    assert resized_size(100, 100) == (800, 800)


def test_people_note():
    assert people_note(1) is None
    assert people_note(3) == "3 people found: the map shows the most confident one."


# --- the API on the tiny stand-in --------------------------------------------------------------------


def test_tiny_stand_in_makes_a_photo_sized_map(tiny):
    result = tiny(photo())
    assert isinstance(result, DensePoseResult)
    assert result.map.size == (320, 480) and result.map.mode == "RGB"
    assert result.weights == "tiny" and result.num_people == 1 and result.note is None
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 480
    assert 0.8 < result.score <= 1
    pixels = np.asarray(result.map)
    assert pixels[..., 2].max() <= 24 and (pixels[..., 2] > 0).any()


def test_tiny_stand_in_is_rebuilt_identically(tmp_path, tiny):
    again = load_tiny_densepose(tmp_path)
    assert np.array_equal(np.asarray(again(photo()).map), np.asarray(tiny(photo()).map))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1"])
def test_odd_modes_give_a_map(tiny, mode):
    source = photo(mode="RGB")
    image = Image.fromarray((np.asarray(source.convert("L")).astype(np.uint16) * 200)) if mode == "I;16" else source.convert(mode)
    assert tiny(image).map.size == source.size


@pytest.mark.parametrize("size", [(8, 8), (12, 180), (3200, 2400), (1500, 100)])
def test_tiny_huge_and_odd_aspect_photos_give_a_map(tiny, size):
    result = tiny(photo(*size))
    assert result.map.size == size


def test_photo_from_path_bytes_and_exif_rotation(tiny, tmp_path):
    source = photo(200, 300)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: shown upright after a 90 degree turn
    source.rotate(90, expand=True).save(buffer, format="JPEG", exif=exif)
    path = tmp_path / "phone.jpg"
    path.write_bytes(buffer.getvalue())
    assert tiny(path).map.size == (200, 300)
    assert tiny(buffer.getvalue()).map.size == (200, 300)


def test_not_an_image_is_a_clear_input_error(tiny):
    with pytest.raises(Parts2WholeInputError):
        tiny(b"this is not a picture")


def test_no_person_is_a_clear_message(tiny):
    strict = DensePoseEstimator(tiny.model, weights="tiny", score_threshold=0.99)
    with pytest.raises(NoPersonFound) as caught:
        strict(photo())
    assert str(caught.value) == NO_PERSON_MESSAGE
    assert isinstance(caught.value, Parts2WholeInputError)


def test_several_people_show_the_top_one_with_a_note():
    state = tiny_state_dict()
    state["roi_heads.box_predictor.bbox_pred.bias"].zero_()  # boxes stay the (many, spread) proposals
    model = build_model(TINY_CONFIG, check_state_dict(state, tiny_shapes()))
    result = DensePoseEstimator(model, weights="tiny")(photo(640, 640))
    assert result.num_people > 1
    assert result.note == f"{result.num_people} people found: the map shows the most confident one."
    run = DensePoseEstimator(model, weights="tiny").run(photo(640, 640))
    assert np.allclose(result.box, run.boxes[0].numpy())
    assert (run.scores[:-1] >= run.scores[1:]).all()
    ys, xs = np.nonzero(np.asarray(result.map)[..., 2])
    x0, y0, x1, y1 = result.box
    assert xs.min() >= int(x0) and xs.max() < x1 and ys.min() >= int(y0) and ys.max() < y1


def test_concurrent_calls_give_the_same_map(tiny):
    image = photo()
    expected = np.asarray(tiny(image).map)
    results, errors = [], []

    def work():
        try:
            results.append(np.asarray(tiny(image).map))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4
    assert all(np.array_equal(result, expected) for result in results)


# --- default estimator and Hub pinning ---------------------------------------------------------------


def test_default_estimator_is_loaded_once_across_threads(monkeypatch, tiny):
    calls = []

    def fake_load():
        calls.append(1)
        return tiny

    monkeypatch.setattr(estimator_module, "load_densepose", fake_load)
    monkeypatch.setattr(estimator_module, "_default_estimator", None)
    threads = [threading.Thread(target=estimator_module.get_densepose_estimator) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert densepose_map(photo()).weights == "tiny"


def test_default_weights_are_the_pinned_hub_file(monkeypatch, tiny, tmp_path):
    requests = []

    def fake_hub_file(repo_id, filename, *, revision, subfolder):
        requests.append((repo_id, filename, revision, subfolder))
        return tmp_path / "model_final_162be9.pkl"

    monkeypatch.setattr(estimator_module, "hub_file", fake_hub_file)
    monkeypatch.setattr(estimator_module, "load_checkpoint_model", lambda path: tiny.model)
    assert len(DENSEPOSE_REVISION) == 40 and all(c in "0123456789abcdef" for c in DENSEPOSE_REVISION)
    expected = "main" if DENSEPOSE_REVISION == estimator_module.UNPINNED_REVISION_PLACEHOLDER else DENSEPOSE_REVISION
    pinned = load_densepose(device="cpu")
    assert requests[-1] == (DENSEPOSE_REPO_ID, DENSEPOSE_FILENAME, expected, "densepose")
    assert pinned.weights == f"{DENSEPOSE_REPO_ID}@{expected}:{DENSEPOSE_FILENAME}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(estimator_module, "DENSEPOSE_REVISION", commit)
    assert load_densepose(device="cpu").weights == f"{DENSEPOSE_REPO_ID}@{commit}:{DENSEPOSE_FILENAME}"
    assert requests[-1][2] == commit
    other = load_densepose(device="cpu", revision="main")
    assert requests[-1][2] == "main" and other.weights.startswith(f"{DENSEPOSE_REPO_ID}@main:")


# --- the decoder window ------------------------------------------------------------------------------


@pytest.mark.parametrize("box", [[300.3, 200.7, 500.2, 600.9], [0.0, 0.0, 100.5, 80.2], [900.0, 500.0, 1156.0, 800.0],
                                 [10.0, 10.0, 1150.0, 795.0], [1100.0, 3.0, 1156.0, 40.0]])
def test_decoder_window_gives_the_whole_maps_values(tiny, box):
    """The DensePose branch decodes only a window around the boxes: same charts as the whole map."""
    from preprocess.densepose.estimator import MEMORY_FORMAT, prepare_input

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1300, 3), dtype=np.uint8))
    image, _ = prepare_input(rgb)
    with torch.inference_mode():
        features = tiny.model.backbone(image.contiguous(memory_format=MEMORY_FORMAT))
        boxes = torch.tensor([box])
        whole = tiny.model.roi_heads.densepose(features, boxes, crop=False)
        windowed = tiny.model.roi_heads.densepose(features, boxes, crop=True)
    for name in ("coarse_segm", "fine_segm", "u", "v"):
        reference = getattr(whole, name)
        scale = float(reference.abs().max())
        torch.testing.assert_close(getattr(windowed, name), reference, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("box", [[9.49, 0.0, 419.59, 768.0], [0.5, 0.5, 1.2, 60.0], [3.2, 5.7, 803.9, 1201.1]])
def test_resampling_channel_by_channel_equals_all_at_once(monkeypatch, box):
    """Large boxes are resampled one channel at a time; the result is detectron2's all-at-once one."""
    from preprocess.densepose import estimator

    generator = torch.Generator().manual_seed(0)
    coarse, fine = torch.randn(2, 112, 112, generator=generator), torch.randn(25, 112, 112, generator=generator)
    u, v = torch.rand(25, 112, 112, generator=generator), torch.rand(25, 112, 112, generator=generator)
    at_once = estimator.charts_to_box(coarse, fine, u, v, torch.tensor(box))
    height, width = at_once.labels.shape
    resized = [functional.interpolate(t[None], size=(height, width), mode="bilinear", align_corners=False)[0] for t in (coarse, fine, u, v)]
    labels = resized[1].argmax(0) * (resized[0].argmax(0) > 0)
    assert np.array_equal(at_once.labels, labels.numpy())  # detectron2's all-channels-at-once rule
    expected_u = torch.gather(resized[2], 0, labels[None])[0] * (labels > 0)
    np.testing.assert_allclose(at_once.u, expected_u.numpy(), atol=1e-6)
    monkeypatch.setattr(estimator, "RESAMPLE_GROUP_ELEMENTS", 0)  # one channel per group
    by_channel = estimator.charts_to_box(coarse, fine, u, v, torch.tensor(box))
    assert (at_once.x, at_once.y) == (by_channel.x, by_channel.y) == (int(box[0]), int(box[1]))
    assert np.array_equal(at_once.labels, by_channel.labels)
    np.testing.assert_allclose(at_once.u, by_channel.u, atol=1e-6)
    np.testing.assert_allclose(at_once.v, by_channel.v, atol=1e-6)
