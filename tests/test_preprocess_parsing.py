"""Human parsing: the part table, the logits -> mask path, and a tiny SegFormer through the real loader."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest_preprocess import FACE_CLASS, save_tiny_parser
from parts2whole.core.errors import CheckpointError, Parts2WholeInputError
from parts2whole.core.labels import FACE, HAIR, LOWER, PART_LABELS, SHOES, UPPER, WHOLE
from preprocess import parsing
from preprocess.parsing import (
    PARSER_CLASS_NAMES,
    PART_TO_PARSER_CLASSES,
    HumanParser,
    _labels_at_size,
    auto_part_mask,
    auto_part_masks,
    labels_to_part_mask,
)


@pytest.fixture(scope="session")
def face_everywhere_parser_dir(tmp_path_factory):
    return save_tiny_parser(tmp_path_factory.mktemp("parser_face"), constant_class=FACE_CLASS)


@pytest.fixture(scope="session")
def hesitant_face_parser_dir(tmp_path_factory):
    """Face wins everywhere, but with probability e / (e + 17) ~ 0.14."""
    return save_tiny_parser(tmp_path_factory.mktemp("parser_hesitant"), constant_class=FACE_CLASS, margin=1.0)


@pytest.fixture(scope="session")
def random_parser_dir(tmp_path_factory):
    return save_tiny_parser(tmp_path_factory.mktemp("parser_random"))


def _photo(width=53, height=37, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


# --- the part table -------------------------------------------------------------------------------


def test_table_covers_exactly_the_six_official_labels_with_known_classes():
    assert set(PART_TO_PARSER_CLASSES) == set(PART_LABELS)
    for names in PART_TO_PARSER_CLASSES.values():
        assert set(names) <= set(PARSER_CLASS_NAMES)


def test_parser_class_order_matches_the_model_card():
    assert len(PARSER_CLASS_NAMES) == 18
    assert PARSER_CLASS_NAMES[0] == "Background" and PARSER_CLASS_NAMES[11] == "Face" and PARSER_CLASS_NAMES[17] == "Scarf"


def _one_pixel_per_class():
    return np.arange(len(PARSER_CLASS_NAMES), dtype=np.uint8).reshape(1, -1)


@pytest.mark.parametrize(
    "label, expected",
    [
        (FACE, {"Face", "Sunglasses"}),
        (HAIR, {"Hat", "Hair"}),
        (UPPER, {"Upper-clothes", "Scarf"}),
        (LOWER, {"Skirt", "Pants", "Belt"}),
        (WHOLE, {"Dress", "Upper-clothes", "Skirt", "Pants", "Belt", "Scarf"}),
        (SHOES, {"Left-shoe", "Right-shoe"}),
    ],
)
def test_each_part_selects_exactly_its_classes(label, expected):
    mask = labels_to_part_mask(_one_pixel_per_class(), label)[0]
    selected = {PARSER_CLASS_NAMES[index] for index in np.flatnonzero(mask)}
    assert selected == expected


def test_skin_bag_and_background_belong_to_no_part():
    label_map = _one_pixel_per_class()
    union = np.zeros(label_map.shape, dtype=bool)
    for label in PART_LABELS:
        union |= labels_to_part_mask(label_map, label)
    never = {"Background", "Bag", "Left-arm", "Right-arm", "Left-leg", "Right-leg"}
    for name in never:
        assert not union[0, PARSER_CLASS_NAMES.index(name)], name


def test_aliases_and_unknown_labels():
    label_map = _one_pixel_per_class()
    assert np.array_equal(labels_to_part_mask(label_map, "shoe"), labels_to_part_mask(label_map, SHOES))
    with pytest.raises(Parts2WholeInputError, match="Unknown part label"):
        labels_to_part_mask(label_map, "gloves")


def test_table_is_applied_by_class_name_not_by_position():
    reordered = {name: index for index, name in enumerate(reversed(PARSER_CLASS_NAMES))}
    label_map = np.array([[reordered["Face"], reordered["Hair"]]], dtype=np.uint8)
    assert labels_to_part_mask(label_map, FACE, reordered).tolist() == [[True, False]]


# --- logits -> label map --------------------------------------------------------------------------


def test_logits_are_upsampled_to_the_image_size_before_the_argmax():
    upper, pants = PARSER_CLASS_NAMES.index("Upper-clothes"), PARSER_CLASS_NAMES.index("Pants")
    logits = torch.zeros(1, len(PARSER_CLASS_NAMES), 4, 4)
    logits[0, upper, :2, :] = 5.0  # top half: upper clothes
    logits[0, pants, 2:, :] = 5.0  # bottom half: pants
    label_map = _labels_at_size(logits, (30, 60))
    assert label_map.shape == (60, 30) and label_map.dtype == np.uint8
    assert (label_map[:25] == upper).all() and (label_map[35:] == pants).all()


# --- a tiny SegFormer through the real loading and inference path ---------------------------------


def test_tiny_parser_loads_and_parses_at_the_image_size(random_parser_dir):
    parser = HumanParser(random_parser_dir)
    assert parser.class_ids == {name: index for index, name in enumerate(PARSER_CLASS_NAMES)}
    label_map = parser.parse(_photo())
    assert label_map.shape == (37, 53)
    assert label_map.max() < len(PARSER_CLASS_NAMES)


# The Hub repo's preprocessor_config.json predates image processors (int size, "reduce_labels").
LEGACY_PREPROCESSOR_CONFIG = """{
  "do_normalize": true, "do_resize": true, "feature_extractor_type": "SegformerFeatureExtractor",
  "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
  "reduce_labels": false, "resample": 2, "size": 512
}"""


def test_legacy_feature_extractor_config_of_the_hub_repo_loads(random_parser_dir, tmp_path):
    import shutil

    folder = tmp_path / "legacy"
    shutil.copytree(random_parser_dir, folder)
    (folder / "preprocessor_config.json").write_text(LEGACY_PREPROCESSOR_CONFIG)
    parser = HumanParser(folder)
    assert (parser.processor.size["height"], parser.processor.size["width"]) == (512, 512)
    assert not parser.processor.do_reduce_labels  # label 0 (Background) must stay a class
    assert parser.parse(_photo()).shape == (37, 53)


def test_found_part_fills_the_mask_and_missing_part_says_click(face_everywhere_parser_dir):
    parser = HumanParser(face_everywhere_parser_dir)
    face = auto_part_mask(_photo(), "face", parser)
    assert face.found and face.message is None
    assert face.mask.mode == "L" and face.mask.size == (53, 37)
    assert face.coverage == pytest.approx(1.0)
    assert face.confidence > 0.99 and not face.unsure
    shoes = auto_part_mask(_photo(), "shoes", parser)
    assert not shoes.found and shoes.coverage == 0.0
    assert np.asarray(shoes.mask).max() == 0
    assert "No shoes found" in shoes.message and "Click" in shoes.message


def test_low_probability_part_is_found_but_flagged_unsure(hesitant_face_parser_dir):
    face = auto_part_mask(_photo(), "face", HumanParser(hesitant_face_parser_dir))
    assert face.found and face.unsure
    assert face.confidence == pytest.approx(math.e / (math.e + 17), abs=0.01)
    assert "may be wrong" in face.message


def test_large_images_are_parsed_at_a_capped_size_then_scaled(monkeypatch):
    monkeypatch.setattr(parsing, "PARSE_MAX_SIDE", 64)
    upper, pants = PARSER_CLASS_NAMES.index("Upper-clothes"), PARSER_CLASS_NAMES.index("Pants")
    logits = torch.zeros(1, len(PARSER_CLASS_NAMES), 4, 4)
    logits[0, upper, :2, :] = 5.0
    logits[0, pants, 2:, :] = 5.0
    parsed = parsing._parsed_at_size(logits, (300, 600))
    assert parsed.labels.shape == (600, 300) and parsed.confidence.shape == (600, 300)
    assert (parsed.labels[:250] == upper).all() and (parsed.labels[350:] == pants).all()
    assert parsed.confidence[10, 10] > 200


def test_all_parts_cost_one_forward_pass(face_everywhere_parser_dir, monkeypatch):
    parser = HumanParser(face_everywhere_parser_dir)
    calls = []
    original = parser._predict
    monkeypatch.setattr(parser, "_predict", lambda rgb: calls.append(1) or original(rgb))
    masks = auto_part_masks(_photo(seed=3), parser=parser)
    assert set(masks) == set(PART_LABELS)
    assert [label for label, part in masks.items() if part.found] == [FACE]
    assert len(calls) == 1


def test_rgba_photo_is_parsed_like_its_flattened_version(random_parser_dir):
    parser = HumanParser(random_parser_dir)
    rgba = _photo().convert("RGBA")
    rgba.putpixel((0, 0), (1, 2, 3, 0))
    assert parser.parse(rgba).shape == (37, 53)


def test_parser_without_the_needed_class_names_is_refused(tmp_path):
    names = list(PARSER_CLASS_NAMES)
    names[PARSER_CLASS_NAMES.index("Sunglasses")] = "Glasses"
    folder = save_tiny_parser(tmp_path / "odd", class_names=tuple(names))
    with pytest.raises(CheckpointError, match="Sunglasses"):
        HumanParser(folder)


# --- download --------------------------------------------------------------------------------------


def test_download_uses_a_filled_weights_folder_without_the_network(tmp_path, monkeypatch, random_parser_dir):
    import shutil

    import huggingface_hub

    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(tmp_path))
    shutil.copytree(random_parser_dir, tmp_path / parsing.PARSER_WEIGHTS_SUBFOLDER)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("network used"))
    assert parsing.download_parser() == tmp_path / parsing.PARSER_WEIGHTS_SUBFOLDER


def test_download_asks_for_the_pinned_commit(tmp_path, monkeypatch):
    import huggingface_hub

    revisions = set()

    def fake_download(repo_id, filename, revision=None, local_dir=None):
        revisions.add((repo_id, revision))
        target = tmp_path / parsing.PARSER_WEIGHTS_SUBFOLDER / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"{}")
        return str(target)

    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    parsing.download_parser()
    assert revisions == {(parsing.PARSER_REPO_ID, parsing.PARSER_REVISION)}
    assert re.fullmatch(r"[0-9a-f]{40}", parsing.PARSER_REVISION)  # a commit, not a branch


def test_failed_download_explains_where_to_put_the_files(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match="segformer_b2_clothes"):
        parsing.download_parser()
