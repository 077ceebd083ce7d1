"""The first-mask policy: parser, else pose-seeded SAM, else "click" - with tiny real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest_preprocess import FACE_CLASS, build_tiny_sam, export_tiny_dwpose, person_photo, save_tiny_parser
from preprocess.images import pixel_hash
from preprocess.parsing import HumanParser
from preprocess.parts import select_part
from preprocess.pose import WholeBodyPoseEstimator
from preprocess.sam import EmbeddingCache, SamSegmenter

DOT = (204.0, 204.0)  # where the tiny DWPose puts every keypoint of person_photo()


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    confident = HumanParser(save_tiny_parser(tmp_path_factory.mktemp("confident"), constant_class=FACE_CLASS))
    hesitant = HumanParser(save_tiny_parser(tmp_path_factory.mktemp("hesitant"), constant_class=FACE_CLASS, margin=1.0))
    pose = WholeBodyPoseEstimator(*export_tiny_dwpose(tmp_path_factory.mktemp("dwpose")))
    segmenter = SamSegmenter(build_tiny_sam(), cache=EmbeddingCache(), decoder_backend="torch")
    return {"confident": confident, "hesitant": hesitant, "pose": pose, "sam": segmenter}


class RecordingSegmenter:
    """The tiny SAM, recording the prompts it was given."""

    def __init__(self, segmenter):
        self.segmenter, self.states = segmenter, []

    def predict(self, image, state):
        self.states.append(state)
        return self.segmenter.predict(image, state)


def test_confident_parser_mask_is_used_and_boxed_for_refinement(models):
    sam = RecordingSegmenter(models["sam"])
    selection = select_part(person_photo(), "face", parser=models["confident"], segmenter=sam, pose_estimator=models["pose"])
    assert selection.source == "parser" and selection.found and selection.message is None
    assert selection.state.box == (0.0, 0.0, 480.0, 480.0)  # the tiny parser sees a face everywhere
    assert selection.state.image_key == pixel_hash(person_photo())
    assert sam.states == []  # SAM not needed


def test_missing_part_is_seeded_from_the_pose_and_segmented(models):
    sam = RecordingSegmenter(models["sam"])
    selection = select_part(person_photo(), "shoes", parser=models["confident"], segmenter=sam, pose_estimator=models["pose"])
    (prompts,) = sam.states
    positives = np.array([(c.x, c.y) for c in prompts.clicks if c.positive])
    assert positives.shape == (4, 2) and np.abs(positives - DOT).max() <= 4  # toes and heels
    assert prompts.box is None
    assert selection.source == "pose+sam" and "body pose" in selection.message
    assert selection.state.low_res_logits is not None and selection.state.clicks == prompts.clicks
    assert selection.mask.size == (480, 480) and np.asarray(selection.mask).max() == 255


def test_unsure_parser_mask_adds_its_box_to_the_pose_seeds(models):
    sam = RecordingSegmenter(models["sam"])
    selection = select_part(person_photo(), "face", parser=models["hesitant"], segmenter=sam, pose_estimator=models["pose"])
    (prompts,) = sam.states
    assert prompts.box == (0.0, 0.0, 480.0, 480.0) and len(prompts.clicks) == 3
    assert selection.source == "pose+sam"


@pytest.fixture()
def sam_that_selects_nothing():
    segmenter = SamSegmenter(build_tiny_sam(), cache=EmbeddingCache(), decoder_backend="torch")
    segmenter.sam.mask_threshold = 1e9  # every logit is below: the real path returns an empty mask
    return segmenter


def test_empty_sam_result_falls_back_to_the_unsure_parser_mask(models, sam_that_selects_nothing):
    selection = select_part(person_photo(), "face", parser=models["hesitant"], segmenter=sam_that_selects_nothing, pose_estimator=models["pose"])
    assert selection.source == "parser" and "may be wrong" in selection.message
    assert np.asarray(selection.mask).min() == 255


def test_empty_sam_result_for_a_missing_part_asks_for_a_click(models, sam_that_selects_nothing):
    selection = select_part(person_photo(), "shoes", parser=models["confident"], segmenter=sam_that_selects_nothing, pose_estimator=models["pose"])
    assert selection.source == "none" and "No shoes found" in selection.message


def test_no_person_and_no_part_asks_for_a_click(models):
    black = Image.new("RGB", (200, 300))
    sam = RecordingSegmenter(models["sam"])
    selection = select_part(black, "shoes", parser=models["confident"], segmenter=sam, pose_estimator=models["pose"])
    assert selection.source == "none" and not selection.found
    assert np.asarray(selection.mask).max() == 0 and "Click" in selection.message
    assert not selection.state.has_prompt and sam.states == []


def test_pose_fallback_can_be_switched_off(models):
    selection = select_part(person_photo(), "shoes", parser=models["confident"], segmenter=models["sam"], use_pose_fallback=False)
    assert selection.source == "none"


def test_unavailable_pose_weights_fall_back_to_asking_for_a_click(models, monkeypatch):
    from parts2whole.core.errors import CheckpointError
    from preprocess import pose

    def offline():
        raise CheckpointError("Could not download yolox_l.onnx")

    monkeypatch.setattr(pose, "get_pose_estimator", offline)
    selection = select_part(person_photo(), "shoes", parser=models["confident"], segmenter=models["sam"])
    assert selection.source == "none" and "No shoes found" in selection.message
