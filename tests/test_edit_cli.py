"""`python -m parts2whole edit` on the tiny model: a result of `generate` is recognised and edited with its
own references, the output keeps the photo outside the region at the photo's size, strength 0 returns
the photo, and bad input is one line with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app_fixtures import REPO_ROOT, example_file
from parts2whole.cli import EXIT_BAD_INPUT, EXIT_OK, main
from parts2whole.model.edit_region import DEFAULT_FEATHER, feathered_alpha


@pytest.fixture(autouse=True)
def offline_tiny(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr()


def test_editing_a_generated_result_keeps_its_pixels_and_reuses_its_inputs(tmp_path, capsys):
    result = tmp_path / "out.png"
    code, _ = _run(["generate", "--weights", "tiny", "--face", str(example_file("face")), "--upper-body-clothes",
                    str(example_file("upper_body_clothes")), "--pose", str(example_file("pose")), "--seed", "1",
                    "--steps", "1", "--height", "96", "--width", "64", "-q", "-o", str(result)], capsys)
    assert code == EXIT_OK
    region = Image.new("RGB", (64, 96))  # a 3-channel mask, as JPEG masks are
    ImageDraw.Draw(region).rectangle((12, 30, 52, 66), fill=(255, 255, 255))
    region.save(tmp_path / "region.png")
    edited_path = tmp_path / "edited.png"
    code, captured = _run(["edit", str(result), "--change", "upper_body_clothes", "--upper-body-clothes",
                           str(example_file("face")), "--region", str(tmp_path / "region.png"), "--weights", "tiny",
                           "--steps", "2", "--seed", "4", "--height", "96", "--width", "64", "-o", str(edited_path)], capsys)
    assert code == EXIT_OK, captured.err
    assert "Editing a result" in captured.err
    edited, original = np.asarray(Image.open(edited_path), dtype=np.float32), np.asarray(Image.open(result), dtype=np.float32)
    assert edited.shape == original.shape
    outside = np.asarray(feathered_alpha(region.convert("L"), DEFAULT_FEATHER)) == 0
    np.testing.assert_allclose(edited[outside], original[outside], atol=1.0)
    assert np.abs(edited[~outside] - original[~outside]).mean() > 5.0
    parameters = json.loads((tmp_path / "edited.json").read_text())
    assert parameters["mode"] == "edit" and parameters["change"] == ["upper body clothes"]
    assert parameters["edit"]["kept_from"].endswith("out.json") and parameters["edit"]["kept"] == ["face"]
    assert parameters["outputs"] == ["edited.png"] and parameters["source_size"] == [64, 96]


def test_strength_zero_returns_a_landscape_webp_photo_unchanged(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"  # WebP bytes under a .jpg name, wider than tall
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)).save(photo, format="WEBP")
    region = Image.new("L", (200, 120))
    ImageDraw.Draw(region).rectangle((80, 80, 120, 115), fill=255)
    region.save(tmp_path / "region.png")
    code, captured = _run(["edit", str(photo), "--shoes", str(example_file("face")), "--region", str(tmp_path / "region.png"),
                           "--strength", "0", "--weights", "tiny", "--steps", "2", "-q", "-o", str(tmp_path / "same.png")],
                          capsys)
    assert code == EXIT_OK, captured.err
    same = np.asarray(Image.open(tmp_path / "same.png"), dtype=np.float32)
    np.testing.assert_allclose(same, np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32), atol=1.0)


@pytest.mark.parametrize("extra, message", [
    (["--change", "top"], "has no new picture"),
    (["--change", "shoes", "--shoes", "X", "--face", "X"], "not among the parts to change"),
    (["--change", "sleeves", "--shoes", "X"], "Unknown part label"),
    (["--shoes", "X", "--region", "WHITE"], "nothing would be kept"),
    (["--shoes", "X", "--strength", "2"], "from 0 to 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (100, 150), (120, 90, 60)).save(photo)
    Image.new("L", (100, 150), 255).save(tmp_path / "white.png")
    extra = [str(example_file("face")) if item == "X" else str(tmp_path / "white.png") if item == "WHITE" else item
             for item in extra]
    code, captured = _run(["edit", str(photo), *extra, "--weights", "tiny", "-o", str(tmp_path / "o.png")], capsys)
    lines = [line for line in captured.err.splitlines() if line.strip() and "float32" not in line]
    assert code == EXIT_BAD_INPUT and message in captured.err, captured.err
    assert "Traceback" not in captured.err and len(lines) == 1, captured.err
