"""DWPose: tiny ONNX detector + pose model with the real signatures through the real code path,
and pure tests of the OpenPose-style rendering and the SAM seed points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest_preprocess import export_tiny_dwpose, person_photo
from preprocess import pose as pose_module
from preprocess.pose import (
    FACE_POINTS,
    HAND_POINT_COLOR,
    LEFT_HAND,
    LIMB_BRIGHTNESS,
    NUM_KEYPOINTS,
    OPENPOSE_COLORS,
    PoseResult,
    WholeBodyPoseEstimator,
    hand_edge_color,
    openpose18_body,
    render_pose_map,
    seed_points_for_part,
)


@pytest.fixture(scope="module")
def tiny_dwpose(tmp_path_factory):
    return export_tiny_dwpose(tmp_path_factory.mktemp("dwpose"))


def test_tiny_models_have_the_real_signatures(tiny_dwpose):
    import onnxruntime

    detector, pose = (onnxruntime.InferenceSession(str(path)) for path in tiny_dwpose)
    assert [(i.name, i.shape) for i in detector.get_inputs()] == [("images", [1, 3, 640, 640])]
    assert [(o.name, o.shape) for o in detector.get_outputs()] == [("output", [1, 8400, 85])]
    assert [(i.name, i.shape) for i in pose.get_inputs()] == [("input", [1, 3, 384, 288])]
    assert [(o.name, o.shape) for o in pose.get_outputs()] == [("simcc_x", [1, 133, 576]), ("simcc_y", [1, 133, 768])]


def test_person_box_and_keypoints_come_back_in_photo_pixels(tiny_dwpose):
    estimator = WholeBodyPoseEstimator(*tiny_dwpose)
    boxes = estimator.detect_people(np.asarray(person_photo())[:, :, ::-1].copy())
    np.testing.assert_allclose(boxes, [[144, 144, 264, 264]], atol=1.0)
    result = estimator.estimate(person_photo())
    assert result.found and result.people.shape == (1, NUM_KEYPOINTS, 3)
    assert (result.width, result.height) == (480, 480)
    np.testing.assert_allclose(result.people[0, :, :2], np.full((NUM_KEYPOINTS, 2), 204.0), atol=4.0)
    assert (result.people[0, :, 2] > 0.3).all()


def test_pose_model_is_fed_rgb_and_detector_bgr(tiny_dwpose, monkeypatch):
    estimator = WholeBodyPoseEstimator(*tiny_dwpose)
    seen = {}
    detector, pose_model = estimator.detector, estimator.pose_model

    def recording_detector(image):
        seen["detector"] = image.copy()
        return detector(image)

    def recording_pose_model(image, bboxes):
        seen["pose"] = image.copy()
        return pose_model(image, bboxes)

    monkeypatch.setattr(estimator, "detector", recording_detector)
    monkeypatch.setattr(estimator, "pose_model", recording_pose_model)
    assert estimator.estimate(person_photo()).found
    assert tuple(seen["pose"][204, 204]) == (255, 0, 0)  # RGB
    assert tuple(seen["detector"][204, 204]) == (0, 0, 255)  # BGR


def test_no_person_gives_an_empty_result_and_a_black_map(tiny_dwpose):
    estimator = WholeBodyPoseEstimator(*tiny_dwpose)
    result = estimator.estimate(Image.new("RGB", (300, 200)))
    assert not result.found and result.people.shape == (0, NUM_KEYPOINTS, 3)
    assert result.main_person() is None
    assert np.asarray(render_pose_map(result, (64, 48))).max() == 0


def test_pose_map_from_photo_draws_on_the_requested_size(tiny_dwpose):
    estimator = WholeBodyPoseEstimator(*tiny_dwpose)
    pose_map, result = pose_module.pose_map_from_photo(person_photo(), (512, 384), estimator)
    assert pose_map.size == (384, 512) and pose_map.mode == "RGB"
    assert np.asarray(pose_map).max() > 0 and result.found


def test_keypoints_are_json_serialisable_and_round_trip():
    people = np.random.default_rng(0).uniform(0, 100, (2, NUM_KEYPOINTS, 3)).astype(np.float32)
    result = PoseResult(100, 80, people)
    data = json.loads(json.dumps(result.to_json()))
    assert data["format"] == "coco-wholebody-133" and len(data["people"][1]["keypoints"]) == NUM_KEYPOINTS
    back = PoseResult.from_json(data)
    np.testing.assert_allclose(back.people, people, atol=1e-3)


def test_download_fetches_both_files_from_the_dwpose_repo(tmp_path, monkeypatch, tiny_dwpose):
    import shutil

    import huggingface_hub

    requested = []

    def fake_download(repo_id, filename, revision=None, local_dir=None):
        requested.append((repo_id, filename))
        target = tmp_path / "dwpose" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dwpose[0] if filename == "yolox_l.onnx" else tiny_dwpose[1], target)
        return str(target)

    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    estimator = WholeBodyPoseEstimator.from_hub()
    assert requested == [("yzd-v/DWPose", "yolox_l.onnx"), ("yzd-v/DWPose", "dw-ll_ucoco_384.onnx")]
    assert estimator.estimate(person_photo()).found


# --- rendering ------------------------------------------------------------------------------------


def _empty_person():
    return np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)


def test_openpose_body_order_and_neck():
    person = _empty_person()
    person[5] = (10, 20, 0.9)  # COCO left shoulder
    person[6] = (30, 20, 0.5)  # COCO right shoulder
    body = openpose18_body(person)
    assert tuple(body[2]) == (30, 20, 0.5) and tuple(body[5]) == (10, 20, 0.9)  # OpenPose 2 = right, 5 = left
    assert tuple(body[1]) == (20, 20, 0.5)  # neck: midpoint, weakest score


def test_known_skeleton_draws_limbs_and_points_at_known_pixels():
    person = _empty_person()
    person[6] = (100, 100, 1.0)  # right shoulder -> OpenPose 2
    person[5] = (300, 100, 1.0)  # left shoulder -> OpenPose 5; neck at (200, 100)
    canvas = np.asarray(render_pose_map(PoseResult(400, 400, person[None]), (400, 400)))
    dimmed = lambda color: tuple(int(round(c * LIMB_BRIGHTNESS)) for c in color)  # noqa: E731
    assert tuple(canvas[100, 150]) == dimmed(OPENPOSE_COLORS[0])  # limb neck-right shoulder
    assert tuple(canvas[100, 250]) == dimmed(OPENPOSE_COLORS[1])  # limb neck-left shoulder
    assert tuple(canvas[100, 100]) == OPENPOSE_COLORS[2]  # right shoulder point
    assert tuple(canvas[100, 200]) == OPENPOSE_COLORS[1]  # neck point
    assert tuple(canvas[100, 300]) == OPENPOSE_COLORS[5]  # left shoulder point
    assert canvas[150:].max() == 0 and canvas[:50].max() == 0  # nothing else


def test_low_score_keypoints_are_not_drawn():
    person = _empty_person()
    person[5] = (300, 100, 0.2)
    person[6] = (100, 100, 0.2)
    assert np.asarray(render_pose_map(PoseResult(400, 400, person[None]), (400, 400))).max() == 0


def test_hands_and_face_styles():
    person = _empty_person()
    person[LEFT_HAND.start] = (50, 200, 1.0)  # wrist
    person[LEFT_HAND.start + 1] = (150, 200, 1.0)  # first thumb joint
    person[FACE_POINTS.start + 30] = (300, 300, 1.0)
    canvas = np.asarray(render_pose_map(PoseResult(400, 400, person[None]), (400, 400)))
    assert tuple(canvas[200, 100]) == hand_edge_color(0) == (255, 0, 0)
    assert tuple(canvas[200, 50]) == HAND_POINT_COLOR
    assert tuple(canvas[300, 300]) == (255, 255, 255)


def test_map_keeps_the_photo_aspect_and_centres_it():
    person = _empty_person()
    person[FACE_POINTS.start] = (50, 100, 1.0)
    canvas = np.asarray(render_pose_map(PoseResult(100, 200, person[None]), (400, 400)))  # scale 2, x offset 100
    assert tuple(canvas[200, 200]) == (255, 255, 255)
    ys, xs = np.nonzero(canvas.max(axis=2))
    assert abs(xs.mean() - 200) < 1 and abs(ys.mean() - 200) < 1


def test_main_person_is_the_biggest_confident_body():
    small, large = _empty_person(), _empty_person()
    small[[5, 6, 11, 12]] = [(10, 10, 1), (20, 10, 1), (10, 30, 1), (20, 30, 1)]
    large[[5, 6, 11, 12]] = [(100, 100, 1), (200, 100, 1), (100, 300, 1), (200, 300, 1)]
    assert PoseResult(400, 400, np.stack([small, large])).main_person() is not None
    assert PoseResult(400, 400, np.stack([small, large])).main_person()[5, 0] == 100


# --- SAM seeds ------------------------------------------------------------------------------------


def _standing_person():
    person = _empty_person()
    body = {
        0: (100, 40), 1: (105, 35), 2: (95, 35), 5: (120, 70), 6: (80, 70),
        11: (115, 140), 12: (85, 140), 13: (115, 190), 14: (85, 190), 15: (115, 240), 16: (85, 240),
        17: (120, 255), 19: (112, 250), 20: (80, 255), 22: (88, 250),
    }
    for index, (x, y) in body.items():
        person[index] = (x, y, 0.9)
    face = FACE_POINTS.start
    person[face + 8] = (100, 60, 0.9)  # chin
    person[face + 21] = (97, 30, 0.9)  # brows
    person[face + 22] = (103, 30, 0.9)
    return person


def test_seed_points_lie_on_their_part():
    person = _standing_person()
    face = seed_points_for_part(person, "face")
    assert {(c.x, c.y) for c in face} == {(100, 40), (105, 35), (95, 35)} and all(c.positive for c in face)
    hair = seed_points_for_part(person, "hair")
    assert hair[0].positive and hair[0].y == pytest.approx(15) and hair[0].x == pytest.approx(100)
    upper = seed_points_for_part(person, "upper body clothes")
    positives = [(c.x, c.y) for c in upper if c.positive]
    assert (100, 70) in positives and all(70 <= y <= 140 for _, y in positives)
    assert [(c.x, c.y) for c in upper if not c.positive] == [(100, 40)]  # not the face
    lower = [(c.x, c.y) for c in seed_points_for_part(person, "lower body clothes") if c.positive]
    assert sorted(lower) == [(85, 165), (115, 165)]
    shoes = seed_points_for_part(person, "shoes")
    assert {(c.x, c.y) for c in shoes if c.positive} == {(120, 255), (112, 250), (80, 255), (88, 250)}
    assert {(c.x, c.y) for c in shoes if not c.positive} == {(115, 190), (85, 190)}


def test_no_seed_points_without_confident_keypoints():
    person = _standing_person()
    person[:, 2] = 0.1
    for label in ("face", "hair", "upper", "lower", "whole body clothes", "shoes"):
        assert seed_points_for_part(person, label) == ()
