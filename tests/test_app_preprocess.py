"""Preprocessing in the app, offline on tiny models: automatic mask, clicks, background removal, pose from a
photo, then generation, through `gradio_client` on the served app; and the service's fallbacks in-process."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_fixtures import EXAMPLE_DIR, FAST_SIZE, FAST_STEPS, WEIGHTS_DIR, example_file, shared_app_url

gradio_client = pytest.importorskip("gradio_client")

PHOTO_BACKGROUND = (238, 236, 230)


def flat_photo(stem: str, folder: Path) -> Path:
    """An example part as a photo: no transparency, on a light backdrop, saved as JPEG."""
    part = Image.open(example_file(stem)).convert("RGBA")
    photo = Image.new("RGB", part.size, PHOTO_BACKGROUND)
    photo.paste(part, (0, 0), part)
    path = folder / f"{stem}.jpg"
    photo.save(path, quality=95)
    return path


def _value(update):
    """Gradio sends an update as {"value": ..., ...}; plain values come as they are."""
    return update.get("value") if isinstance(update, dict) and "__type__" in update else update


def _mask(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return gradio_client.Client(shared_app_url(), verbose=False,
                                download_files=str(tmp_path_factory.mktemp("downloads")))


def test_designer_flow_mask_clicks_background_pose_then_generate(client, tmp_path):
    handle = gradio_client.handle_file
    shirt = flat_photo("upper_body_clothes", tmp_path)
    face = flat_photo("face", tmp_path)
    size = Image.open(shirt).size

    # Upload a photo into Upper-body clothes: an automatic mask comes back, shown over the picture.
    mask, preview, _editor, _mode, message = client.predict(handle(str(shirt)), api_name="/upper_body_clothes_auto_mask")
    automatic = _mask(mask)
    assert automatic.shape == (size[1], size[0]) and automatic.max() == 255
    assert preview["label"].startswith("Used area") and Image.open(_value(preview)).size == size
    assert _value(message)

    # A positive click, then a negative one: the mask changes each time (the session keeps the clicks).
    mask, preview, *_ = client.predict(handle(str(shirt)), "add", 128, 150, api_name="/upper_body_clothes_click")
    added = _mask(mask)
    assert "clicks" in preview["label"] and not np.array_equal(added, automatic)
    mask, preview, *_ = client.predict(handle(str(shirt)), "remove", 30, 230, api_name="/upper_body_clothes_click")
    refined = _mask(mask)
    assert not np.array_equal(refined, added)
    refined_mask_path = tmp_path / "upper_mask.png"
    Image.fromarray(refined).save(refined_mask_path)

    # Remove the background of another slot: the cut-out's alpha becomes that slot's mask.
    mask, preview, *_ = client.predict(handle(str(face)), api_name="/face_remove_background")
    from preprocess.tiny import TinyPreprocessFiles, tiny_background_remover

    files = TinyPreprocessFiles(WEIGHTS_DIR / "tiny-preprocess")
    expected_alpha = np.asarray(tiny_background_remover(files.background).remove_background(Image.open(face))
                                .getchannel("A"))
    face_mask = _mask(mask)
    assert "background removed" in preview["label"]
    assert np.abs(face_mask.astype(int) - expected_alpha.astype(int)).max() <= 1
    assert 0 < (face_mask > 127).mean() < 1  # a subject, not the whole picture
    face_mask_path = tmp_path / "face_mask.png"
    Image.fromarray(face_mask).save(face_mask_path)

    # A photo in the Pose slot: DWPose makes an OpenPose-style map, labelled as another kind than DensePose.
    pose_map, pose_preview, note = client.predict(handle(str(EXAMPLE_DIR / "thumbnail.jpg")), FAST_SIZE,
                                                  api_name="/pose_openpose_from_photo")
    from preprocess.structure import structure_kind_of

    assert structure_kind_of(Image.open(_value(pose_map))) == "openpose"
    assert Image.open(_value(pose_preview)).size == Image.open(EXAMPLE_DIR / "thumbnail.jpg").size
    assert "OpenPose" in _value(note) and "DensePose" in _value(note)

    # Generate with all of it; the bundle holds the derived masks, the pose map and its keypoints.
    gallery, bundle, status, _seed = client.predict(
        face=handle(str(face)), face_mask=handle(str(face_mask_path)),
        upper_body_clothes=handle(str(shirt)), upper_body_clothes_mask=handle(str(refined_mask_path)),
        pose=handle(_value(pose_map)), prompt="a person in a red shirt", seed=3, randomize_seed=False,
        steps=FAST_STEPS, size=FAST_SIZE, api_name="/generate")
    assert "Done" in status and "openpose" in status and len(gallery) == 1
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        parameters = json.loads(archive.read("parameters.json"))
        bundled_upper = np.asarray(Image.open(archive.open("masks/upper_body_clothes.png")).convert("L"))
        keypoints = json.loads(archive.read("inputs/pose_keypoints.json"))
    assert {"masks/face.png", "masks/upper_body_clothes.png", "inputs/pose.png"} <= names
    assert np.array_equal(bundled_upper, refined)
    assert parameters["structure_kind"] == "openpose" and parameters["expected_structure_kind"] == "densepose"
    assert parameters["pose_source"] == "DWPose from a photo" and keypoints["format"] == "coco-wholebody-133"


def test_tool_errors_are_one_clear_line(client):
    with pytest.raises(Exception, match="Upload the upper-body clothes picture first") as error_info:
        client.predict(None, "add", 10, 10, api_name="/upper_body_clothes_click")
    assert "Traceback" not in str(error_info.value)
    with pytest.raises(Exception, match="outside"):
        client.predict(gradio_client.handle_file(str(example_file("shoes"))), "add", 5000, 10, api_name="/shoes_click")


# ---------------------------------------------------------------------------------------- in-process


class FakeStudio:
    """What the service reads of a studio, without any model."""

    def __init__(self, tiny: bool, folder: str = "unused"):
        from parts2whole.studio import DeviceChoice, ResolvedWeights

        self.is_tiny, self.is_loaded = tiny, False
        self.weights = ResolvedWeights(path=folder, name="fake", is_tiny=tiny)
        self.device_choice = DeviceChoice(device="cpu", dtype=None)


def test_real_weights_that_cannot_be_downloaded_fall_back_to_tiny_models(monkeypatch):
    from parts2whole.core.errors import CheckpointError
    from parts2whole.studio.preprocessing import PreprocessingService
    from preprocess import parsing

    def unreachable(*args, **kwargs):
        raise CheckpointError("Could not download config.json from the Hugging Face Hub (ConnectError).")

    monkeypatch.setattr(parsing.HumanParser, "from_hub", classmethod(unreachable))
    service = PreprocessingService(FakeStudio(tiny=False), tiny_folder=WEIGHTS_DIR / "tiny-preprocess")
    assert service.banner_note() is None  # real weights expected: no banner up front
    parser = service.parser()
    assert parser is service.parser() and "human parser" in service.fallbacks
    assert "could not be downloaded" in service.fallback_note("human parser")
    assert service.fallback_note("DWPose") is None


def test_tiny_studio_means_tiny_preprocessing_and_the_banner_says_so(tmp_path):
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui import build_demo

    service = PreprocessingService(FakeStudio(tiny=True, folder=str(tmp_path)), tiny_folder=tmp_path / "unused")
    assert service.uses_tiny_models and "tiny random models" in service.banner_note()
    assert service.expected_structure_kind() == "densepose"  # a checkpoint folder without metadata

    from parts2whole.studio import ResolvedWeights, Studio

    studio = Studio(resolver=lambda spec: ResolvedWeights(path=str(tmp_path), name="tiny", is_tiny=True))
    demo = build_demo(studio, service)
    banner = next(block for block in demo.config["components"] if block.get("props", {}).get("elem_id") == "tiny-model-banner")
    assert "tiny random models" in banner["props"]["value"]
    names = {dependency.get("api_name") for dependency in demo.config["dependencies"]}
    for key in ("face", "hair_or_headwear", "upper_body_clothes", "lower_body_clothes", "whole_body_clothes", "shoes"):
        assert {f"{key}_auto_mask", f"{key}_click", f"{key}_undo_click", f"{key}_remove_background"} <= names
    assert {"pose_from_photo", "pose_upload", "pose_kind", "generate"} <= names
    assert not studio.is_loaded  # building the UI never loads the model


def test_box_needs_two_corners_and_undo_steps_back(tmp_path):
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui.tools import make_tool_handlers

    service = PreprocessingService(FakeStudio(tiny=True), tiny_folder=WEIGHTS_DIR / "tiny-preprocess")
    tools = make_tool_handlers("shoes", service)
    shoes = str(flat_photo("shoes", tmp_path))
    mask, preview, _editor, _mode, message, state = tools["click"](shoes, "box", 20, 30, None)
    assert "opposite corner" in message["value"] and state["corner"] == (20.0, 30.0)
    boxed, preview, _editor, _mode, message, state = tools["click"](shoes, "box", 230, 220, state)
    assert "box" in preview["label"] and state["clicks"].box == (20.0, 30.0, 230.0, 220.0)
    added, preview, *_, state = tools["click"](shoes, "add", 100, 120, state)
    assert len(state["clicks"].clicks) == 1

    undone, preview, *_, state = tools["undo"](shoes, state)  # exactly the mask before the click
    assert np.array_equal(np.asarray(undone), np.asarray(boxed)) and not state["clicks"].clicks
    undone, preview, *_, state = tools["undo"](shoes, state)  # before the box: the picture's own mask
    assert undone is None and getattr(state["clicks"], "box", None) is None
    *_, message, state = tools["undo"](shoes, state)
    assert message["value"] == "No click to undo."


def test_the_expected_pose_map_kind_comes_from_the_checkpoint(tmp_path, monkeypatch):
    from parts2whole import studio as studio_module
    from parts2whole.model.pipeline import Parts2WholePipeline
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.train.export import METADATA_NAME

    (tmp_path / METADATA_NAME).write_text(json.dumps({"structure_kind": "openpose"}))
    service = PreprocessingService(FakeStudio(tiny=False, folder=str(tmp_path)))
    assert service.expected_structure_kind() == "openpose"
    assert service.structure_note("openpose", from_photo=True).startswith("✓")
    assert "different kind" in service.structure_note("densepose") and "OpenPose-style" in service.structure_note("densepose")

    seen = {}

    def fake_from_pretrained(cls, path, **kwargs):
        seen.update(kwargs)
        return type("Pipe", (), {"to": lambda self, device: self})()

    monkeypatch.setattr(Parts2WholePipeline, "from_pretrained", classmethod(fake_from_pretrained))
    weights = studio_module.ResolvedWeights(path=str(tmp_path), name="fine-tuned")
    studio_module.load_pipeline(weights, studio_module.DeviceChoice(device="cpu", dtype=None))
    assert seen["structure_kind"] == "openpose"  # the loaded pipeline reports what its pose guider reads


def test_pose_slot_keeps_a_map_and_turns_a_photo_into_a_labelled_skeleton(tmp_path):
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.train.export import METADATA_NAME
    from parts2whole.ui.pose import make_pose_handlers

    service = PreprocessingService(FakeStudio(tiny=True), tiny_folder=WEIGHTS_DIR / "tiny-preprocess")
    pose = make_pose_handlers(service)
    densepose = str(example_file("pose"))
    kept, preview, note, state = pose["upload"](densepose, FAST_SIZE)
    assert note["value"].startswith("✓ **DensePose map**") and preview["visible"] is False and not state["from_photo"]

    (tmp_path / METADATA_NAME).write_text(json.dumps({"structure_kind": "openpose"}))  # a photo becomes a skeleton
    service = PreprocessingService(FakeStudio(tiny=True, folder=str(tmp_path)), tiny_folder=WEIGHTS_DIR / "tiny-preprocess")
    pose = make_pose_handlers(service)

    photo = str(EXAMPLE_DIR / "thumbnail.jpg")
    pose_map, preview, note, state = pose["upload"](photo, FAST_SIZE)  # a photo, not a map: DWPose runs
    assert pose_map.size == (512, 768) and preview["visible"] and "OpenPose-style" in note["value"]
    assert state["from_photo"] and state["keypoints"]["people"]
    pose_map.save(tmp_path / "map.png")
    note, _preview, kept_state = pose["kind"](str(tmp_path / "map.png"), state)  # the map's own change event
    assert "made from your photo" in note["value"] and kept_state["from_photo"]
    note, preview, state = pose["kind"](densepose, state)  # another map replaces it
    assert "uploaded" in note["value"] and not state["from_photo"] and preview["visible"] is False
