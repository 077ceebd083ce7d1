"""Pose from a photo, end to end: the service draws the kind of map the model reads (DensePose for the
released checkpoint, a DWPose skeleton for an OpenPose one), the app's Pose slot and bundle say how the map
was made, the `pose` and `generate --pose-photo` commands, and the endpoints of the served app.

Offline on the tiny stand-ins (`preprocess.densepose.load_tiny_densepose`, the tiny DWPose pair); the
messages for several people and for nobody come from a stand-in estimator that returns a fixed result;
`pose --densepose-weights` runs the real-size model on D1's random model-zoo checkpoint and must write
detectron2's own map.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_fixtures import EXAMPLE_DIR, FAST_SIZE, FAST_STEPS, REPO_ROOT, WEIGHTS_DIR, app_env, example_file, shared_app_url
from densepose_reference import shared_available
from parts2whole.cli import EXIT_BAD_INPUT, main
from test_app_preprocess import FakeStudio
from test_densepose import d1_checkpoint  # noqa: F401 - fixture (D1's random checkpoint as a model-zoo .pkl)

PHOTO = EXAMPLE_DIR / "thumbnail.jpg"
#: The issue's benchmark photo size (detectron2's test-time resize takes it to 800 x 1175).
PERSON_PHOTO_SIZE = (750, 1101)
TINY_FOLDER = WEIGHTS_DIR / "tiny-preprocess"
#: Keys MAP.json and the bundle's `pose_map` have for a map made from a photo.
DETAIL_KEYS = {"kind", "from_photo", "tool", "weights", "box", "score", "people_found", "photo_size", "map_size"}


@dataclasses.dataclass(frozen=True)
class FixedResult:
    """What a DensePoseEstimator returns, fixed: a map with two parts inside `box` of a w x h photo."""

    map: Image.Image
    box: tuple[float, float, float, float]
    score: float
    num_people: int
    weights: str = "fixed"
    note: str | None = None


def fixed_result(size: tuple[int, int], people: int = 1) -> FixedResult:
    width, height = size
    box = (width * 0.3, height * 0.1, width * 0.7, height * 0.9)
    iuv = np.zeros((height, width, 3), dtype=np.uint8)
    x0, y0, x1, y1 = (round(value) for value in box)
    iuv[y0:(y0 + y1) // 2, x0:x1] = (200, 90, 2)  # R = V, G = U, B = part index (torso)
    iuv[(y0 + y1) // 2:y1, x0:x1] = (40, 160, 9)  # a leg
    note = f"{people} people found: the map shows the most confident one." if people > 1 else None
    return FixedResult(Image.fromarray(iuv), box, 0.97, people, note=note)


class FixedEstimator:
    def __init__(self, people: int = 1):
        self.people = people

    def __call__(self, photo):
        if self.people == 0:
            from preprocess.densepose import NO_PERSON_MESSAGE, NoPersonFound

            raise NoPersonFound(NO_PERSON_MESSAGE)
        return fixed_result(photo.size, self.people)


def person_photo(folder) -> Path:
    """The example's photo at PERSON_PHOTO_SIZE (a photo-like size, not the square thumbnail), as a JPEG."""
    path = Path(folder) / "person.jpg"
    if not path.is_file():
        Image.open(PHOTO).convert("RGB").resize(PERSON_PHOTO_SIZE, Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def openpose_checkpoint(folder):
    from parts2whole.train.export import METADATA_NAME

    (folder / METADATA_NAME).write_text(json.dumps({"structure_kind": "openpose"}))
    return folder


def fixed_service(people: int = 1, folder: str = "unused"):
    from parts2whole.studio.preprocessing import DENSEPOSE, PreprocessingService

    service = PreprocessingService(FakeStudio(tiny=True, folder=folder), tiny_folder=TINY_FOLDER)
    service._models[DENSEPOSE] = FixedEstimator(people)
    return service


# ---------------------------------------------------------------------------------------- service


def test_the_photo_becomes_the_kind_of_map_the_model_reads(tmp_path):
    from parts2whole.studio.preprocessing import PreprocessingService
    from preprocess.structure import structure_kind_of

    photo = Image.open(person_photo(tmp_path))
    released = PreprocessingService(FakeStudio(tiny=True, folder=str(tmp_path)), tiny_folder=TINY_FOLDER)
    made = released.pose_from_photo(photo, (192, 128))  # no parts2whole.json: the released model, DensePose
    assert made.kind == "densepose" and made.keypoints is None
    assert made.pose_map.size == (128, 192) and made.preview.size == photo.size
    assert DETAIL_KEYS <= set(made.details) and made.details["weights"] == "tiny"
    x0, y0, x1, y1 = made.details["box"]
    assert 0 <= x0 < x1 <= photo.width and 0 <= y0 < y1 <= photo.height
    assert made.details["people_found"] >= 1 and made.details["map_size"] == [128, 192]

    fine_tuned = PreprocessingService(FakeStudio(tiny=True, folder=str(openpose_checkpoint(tmp_path))),
                                      tiny_folder=TINY_FOLDER)
    made = fine_tuned.pose_from_photo(photo, (192, 128))
    assert made.kind == "openpose" and made.keypoints["format"] == "coco-wholebody-133"
    assert structure_kind_of(made.pose_map) == "openpose" and made.details["weights"] == "tiny"
    assert made.details["box"] is None and made.details["people_found"] == made.people >= 1
    # An explicit kind wins over the model's (a fixed DensePose estimator: the tiny one ran above).
    from parts2whole.studio.preprocessing import DENSEPOSE

    fine_tuned._models[DENSEPOSE] = FixedEstimator()
    assert fine_tuned.pose_from_photo(photo, (192, 128), "densepose").details["weights"] == "fixed"


def test_the_densepose_map_is_fitted_keeping_the_aspect_without_new_values():
    from parts2whole.studio.preprocessing import fit_map, make_pose_map

    photo = Image.new("RGB", (300, 200), (120, 130, 140))  # landscape photo, portrait output
    made = make_pose_map(photo, "densepose", (192, 128), densepose=FixedEstimator())
    pose_map = np.asarray(made.pose_map)
    assert pose_map.shape == (192, 128, 3)
    # 300 x 200 fits into 128 wide: 128 x 85, centred with black bars above and below.
    rows = np.flatnonzero(pose_map.max(axis=(1, 2)) > 0)
    assert pose_map[:50].max() == 0 and pose_map[-50:].max() == 0 and 50 <= rows.min() and rows.max() < 142
    colours = {tuple(pixel) for pixel in pose_map.reshape(-1, 3)}
    assert colours == {(0, 0, 0), (200, 90, 2), (40, 160, 9)}  # nearest neighbour: no blended part index
    x0, y0, x1, y1 = made.details["box_in_map"]
    assert x0 == pytest.approx(90 * 128 / 300, abs=0.01) and y0 == pytest.approx(53 + 20 * 128 / 300, abs=0.01)
    # Without a size the map stays photo-sized, so its pixels match the box.
    assert make_pose_map(photo, "densepose", None, densepose=FixedEstimator()).pose_map.size == photo.size
    fitted, (scale, left, top) = fit_map(Image.new("RGB", (100, 400), (1, 2, 3)), (200, 200))
    assert fitted.size == (200, 200) and (scale, left, top) == (0.5, 75.0, 0.0)


# ---------------------------------------------------------------------------------------- app (in-process)


def test_pose_slot_makes_a_densepose_map_notes_several_people_and_the_bundle_says_how(tmp_path):
    from parts2whole.ui.pose import make_pose_handlers, pose_details

    service = fixed_service(people=3)
    pose = make_pose_handlers(service)
    pose_map, preview, note, state = pose["from_photo"](str(PHOTO), FAST_SIZE)
    assert pose_map.size == (512, 768)  # the output's shape, at least 768 long
    assert note["value"].startswith("✓ **DensePose map** (made from your photo with DensePose)")
    assert "3 people found: the map shows the most confident one." in note["value"]
    assert "DensePose" in preview["label"] and preview["value"].size == Image.open(PHOTO).size
    assert state["kind"] == "densepose" and state["details"]["people_found"] == 3

    pose_map.save(tmp_path / "map.png")
    note, _preview, kept = pose["kind"](str(tmp_path / "map.png"), state)  # the slot's own change event
    assert "made from your photo with DensePose" in note["value"] and kept["from_photo"]

    parameters, files = pose_details(service, Image.open(tmp_path / "map.png"), kept)
    assert parameters["structure_kind"] == "densepose" and parameters["pose_source"] == "DensePose from a photo"
    record = parameters["pose_map"]
    assert DETAIL_KEYS <= set(record) and record["from_photo"] is True and record["score"] == 0.97
    assert record["weights"] == "fixed" and len(record["box"]) == 4 and not files
    uploaded, _ = pose_details(service, Image.open(example_file("pose")), kept)
    assert uploaded["pose_map"] == {"kind": "densepose", "from_photo": False}


def test_no_person_is_one_clear_message_in_the_app(tmp_path):
    import gradio as gr

    from parts2whole.ui.pose import make_pose_handlers
    from preprocess.densepose import NO_PERSON_MESSAGE

    pose = make_pose_handlers(fixed_service(people=0))
    with pytest.raises(gr.Error) as error_info:
        pose["densepose_from_photo"](str(PHOTO), FAST_SIZE)
    assert NO_PERSON_MESSAGE in str(error_info.value)
    pose = make_pose_handlers(fixed_service(people=0, folder=str(openpose_checkpoint(tmp_path))))
    assert pose["from_photo"](str(PHOTO), FAST_SIZE)[3]["kind"] == "openpose"  # DensePose is not asked


# ---------------------------------------------------------------------------------------- CLI


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parts2whole", *args], cwd=REPO_ROOT, env=app_env(),
                          capture_output=True, text=True, timeout=300)


def test_pose_command_writes_the_map_and_its_json(tmp_path):
    photo_path = person_photo(tmp_path)
    completed = _run("pose", str(photo_path), "-o", str(tmp_path / "map.png"), "--weights", "tiny")
    assert completed.returncode == 0, completed.stderr
    photo = Image.open(photo_path)
    assert Image.open(tmp_path / "map.png").size == photo.size and Image.open(tmp_path / "map.png").mode == "RGB"
    record = json.loads((tmp_path / "map.json").read_text())
    assert DETAIL_KEYS <= set(record) and record["kind"] == "densepose" and record["weights"] == "tiny"
    assert len(record["box"]) == 4 and 0 <= record["score"] <= 1 and record["people_found"] >= 1
    assert record["photo_size"] == list(photo.size) and record["map"] == "map.png"
    assert str(tmp_path / "map.json") in completed.stdout


@pytest.mark.parametrize("argv", [
    ["pose", str(PHOTO), "-o", "map.jpg", "--weights", "tiny"],  # lossy
    ["pose", str(PHOTO), "-o", "map.png", "--kind", "openpose", "--densepose-weights", "model.pkl"],
    ["pose", str(PHOTO), "-o", "map.png", "--densepose-weights", "/nonexistent/model_final_162be9.pkl"],
    ["pose", "/nonexistent/photo.jpg", "-o", "map.png", "--weights", "tiny"],
    ["pose", str(PHOTO), "-o", "map.png", "--kind", "skeleton"],
    ["pose", str(PHOTO), "-o", "map.png", "--height", "768"],
    ["generate", "--face", str(example_file("face")), "--pose", str(example_file("pose")), "--pose-photo",
     str(PHOTO), "--weights", "tiny"],  # one or the other
])
def test_pose_mistakes_are_one_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == EXIT_BAD_INPUT and len(lines) == 1 and "error:" in lines[0], captured.err


def test_no_person_in_the_photo_is_exit_2(capsys, tmp_path, monkeypatch):
    from parts2whole.cli import pose as pose_command
    from preprocess.densepose import NO_PERSON_MESSAGE

    monkeypatch.setattr(pose_command, "_pose_estimators", lambda args: {"densepose": FixedEstimator(people=0)})
    code = main(["pose", str(PHOTO), "-o", str(tmp_path / "map.png")])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT and err.strip().count("\n") == 0 and NO_PERSON_MESSAGE in err
    assert not (tmp_path / "map.png").exists()


@pytest.mark.skipif(not shared_available(), reason="../shared/densepose is not here")
def test_pose_command_with_a_model_zoo_checkpoint_writes_detectron2s_map(d1_checkpoint, tmp_path, capsys):
    """`--densepose-weights FILE` (a real-size model-zoo .pkl: D1's random one) gives detectron2's own D1 map."""
    from densepose_reference import D1

    assert main(["pose", str(D1 / "input.jpg"), "-o", str(tmp_path / "map.png"), "--densepose-weights",
                 str(d1_checkpoint), "--device", "cpu", "-q"]) == 0
    ours = np.asarray(Image.open(tmp_path / "map.png").convert("RGB")).astype(int)
    reference = np.asarray(Image.open(D1 / "iuv.png").convert("RGB")).astype(int)
    person = (ours[..., 2] > 0) | (reference[..., 2] > 0)
    agree = ours[..., 2] == reference[..., 2]
    assert ours.shape == reference.shape and agree[person].mean() >= 0.995
    assert np.abs(ours - reference)[agree & (reference[..., 2] > 0)].max() <= 2
    record = json.loads((tmp_path / "map.json").read_text())
    np.testing.assert_allclose(record["box"], np.load(D1 / "detections_boxes_xyxy.npy")[0], atol=0.5)
    assert record["score"] == pytest.approx(float(np.load(D1 / "detections_scores.npy")[0]), abs=1e-3)
    assert record["people_found"] == 1 and record["weights"] == str(d1_checkpoint)


def test_generate_with_a_pose_photo_on_the_tiny_model(tmp_path):
    output = tmp_path / "portrait.png"
    photo = person_photo(tmp_path)
    completed = _run("generate", "--weights", "tiny", "--face", str(example_file("face")), "--pose-photo", str(photo),
                     "--seed", "1", "--steps", "2", "--height", "96", "--width", "64", "-o", str(output))
    assert completed.returncode == 0, completed.stderr
    parameters = json.loads((tmp_path / "portrait.json").read_text())
    assert parameters["inputs"]["pose photo"] == str(photo) and "pose" not in parameters["inputs"]
    record = parameters["pose_map"]
    assert record["kind"] == "densepose" and record["from_photo"] and record["file"] == "portrait_pose.png"
    assert Image.open(tmp_path / "portrait_pose.png").size == (64, 96) and Image.open(output).size == (64, 96)


# ---------------------------------------------------------------------------------------- served app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(shared_app_url(), verbose=False,
                                download_files=str(tmp_path_factory.mktemp("downloads")))


def _value(update):
    return update.get("value") if isinstance(update, dict) and "__type__" in update else update


def test_endpoints_make_each_kind_and_generate_records_the_densepose_map(client, tmp_path):
    from gradio_client import handle_file

    from parts2whole.studio.preprocessing import fit_map
    from parts2whole.ui.pose import pose_map_size
    from preprocess.densepose import load_tiny_densepose
    from preprocess.structure import structure_kind_of

    photo = person_photo(tmp_path)
    pose_map, preview, note = client.predict(handle_file(str(photo)), FAST_SIZE, api_name="/pose_from_photo")
    assert "DensePose map" in _value(note) and "made from your photo with DensePose" in _value(note)
    served = np.asarray(Image.open(_value(pose_map)).convert("RGB")).astype(int)
    expected, _ = fit_map(load_tiny_densepose(TINY_FOLDER)(Image.open(photo).convert("RGB")).map,
                          pose_map_size(FAST_SIZE))
    assert served.shape == (768, 512, 3) and served.max() > 0
    assert (np.abs(served - np.asarray(expected).astype(int)).max(axis=2) <= 2).mean() > 0.99  # the library's map

    skeleton, _, note = client.predict(handle_file(str(PHOTO)), FAST_SIZE, api_name="/pose_openpose_from_photo")
    assert "OpenPose-style" in _value(note) and structure_kind_of(Image.open(_value(skeleton))) == "openpose"

    # The DensePose endpoint, whatever the model reads; then a generation with its map.
    pose_map, _, note = client.predict(handle_file(str(photo)), FAST_SIZE, api_name="/pose_densepose_from_photo")
    assert "DensePose map" in _value(note)
    _gallery, bundle, status, _seed = client.predict(
        face=handle_file(str(example_file("face"))), pose=handle_file(_value(pose_map)), seed=5,
        randomize_seed=False, steps=FAST_STEPS, size=FAST_SIZE, api_name="/generate")
    assert "Done" in status and "⚠️ The pose map" not in status
    with zipfile.ZipFile(bundle) as archive:
        parameters = json.loads(archive.read("parameters.json"))
        bundled = np.asarray(Image.open(archive.open("inputs/pose.png")).convert("RGB"))
    assert parameters["pose_source"] == "DensePose from a photo" and parameters["structure_kind"] == "densepose"
    assert DETAIL_KEYS <= set(parameters["pose_map"]) and parameters["pose_map"]["weights"] == "tiny"
    assert np.array_equal(bundled, np.asarray(Image.open(_value(pose_map)).convert("RGB")))
