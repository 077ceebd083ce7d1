"""The "stretched to fit" note fires only when stretching the pose map visibly distorts the body.

The dataset's own DensePose maps (750x1101, width x height) at the default output of height 768 and width
512 differ from it by 2.2 % in aspect: the model's normal input, no note. A square or landscape map does
get the note. Checked through the studio's request (what the app, the CLI and batches use), the library's
pipeline note, and the CLI as a person runs it.
"""

from __future__ import annotations

import logging

import pytest
from PIL import Image

from app_fixtures import WEIGHTS_DIR, example_file
from examples_standin import densepose_map
from parts2whole.cli import main as cli_main
from parts2whole.core.limits import STRUCTURE_ASPECT_TOLERANCE
from parts2whole.model.validation import structure_note
from parts2whole.studio import GenerationRequest

DATASET_MAP = (750, 1101)  # width x height of every DensePose map in DeepFashion-MultiModal-Parts2Whole
#: (map width, map height), (output height, output width), whether the note is expected.
SHAPES = {
    "dataset map at the default 768x512": (DATASET_MAP, (768, 512), False),
    "dataset map at the 384x256 preview": (DATASET_MAP, (384, 256), False),
    "exact 2:3 map": ((512, 768), (768, 512), False),
    "3:4 phone photo map at 768x512": ((768, 1024), (768, 512), True),
    "dataset map at the 1024x768 preset": (DATASET_MAP, (1024, 768), True),
    "square map at 768x512": ((600, 600), (768, 512), True),
    "landscape map at 768x512": ((1101, 750), (768, 512), True),
}


def pose_map(size: tuple[int, int]) -> Image.Image:
    return densepose_map("front", arms_up=False, size=size)


def test_the_tolerance_lies_between_the_dataset_shape_and_a_visible_stretch():
    dataset = (750 / 1101) / (512 / 768) - 1
    three_four = (768 / 1024) / (512 / 768) - 1
    assert dataset < STRUCTURE_ASPECT_TOLERANCE < abs((750 / 1101) / (768 / 1024) - 1) < three_four


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_studio_notes_a_stretch_only_when_it_distorts(name):
    size, (height, width), expected = SHAPES[name]
    request = GenerationRequest(references={"face": Image.open(example_file("face"))}, structure=pose_map(size),
                                prompt="a person", seed=1, steps=1, height=height, width=width).validated()
    notes = " ".join(request.notes())
    assert ("stretched" in notes) is expected, notes
    library_note = structure_note(pose_map(size), height, width)  # what Parts2WholePipeline.__call__ logs
    assert (library_note is not None) is expected
    if expected:
        assert f"{size[0]}x{size[1]}" in notes and f"{width}x{height}" in notes


@pytest.mark.parametrize("size, expected", [(DATASET_MAP, False), ((600, 600), True)], ids=["dataset", "square"])
def test_the_cli_prints_the_note_for_a_square_map_not_for_a_dataset_map(size, expected, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    pose = tmp_path / "map.png"
    pose_map(size).save(pose)
    with caplog.at_level(logging.WARNING):
        code = cli_main(["generate", "--weights", "tiny", "--face", str(example_file("face")), "--pose", str(pose),
                         "--height", "96", "--width", "64", "--steps", "1", "--seed", "1", "-q",  # 768x512's shape
                         "-o", str(tmp_path / "out.png")])
    assert code == 0
    warnings = " ".join(record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)
    assert ("stretched to fit" in warnings) is expected, warnings
