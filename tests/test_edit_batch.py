"""Batch manifest lines with a `source` are edits, with the CLI's keys; a bad edit line gets its message."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageDraw

from app_fixtures import REPO_ROOT, example_file
from parts2whole import batch
from parts2whole.model.edit_region import DEFAULT_FEATHER, feathered_alpha


def test_a_manifest_line_with_a_source_is_an_edit(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (130, 180, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    region = Image.new("L", (180, 130))
    ImageDraw.Draw(region).rectangle((70, 80, 110, 120), fill=255)
    region.save(tmp_path / "region.png")
    shoes = str(example_file("face"))
    lines = [{"id": "new-shoes", "source": "photo.png", "change": "shoes", "shoes": shoes, "region": "region.png",
              "strength": 1.0, "seed": 3, "steps": 1, "height": 96, "width": 64},
             {"id": "no-picture", "source": "photo.png", "change": "shoes,top", "shoes": shoes, "region": "region.png"},
             {"id": "stray", "face": shoes, "pose": str(example_file("pose")), "strength": 0.5}]
    (tmp_path / "edits.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    summary = batch.run(str(tmp_path / "edits.jsonl"), str(tmp_path / "out"), weights="tiny", progress=False)
    results = {row.id: row for row in summary.results}
    assert results["new-shoes"].status == "ok", results["new-shoes"].message
    assert "has no new picture" in results["no-picture"].message
    assert "strength is for an edit" in results["stray"].message
    edited = np.asarray(Image.open(tmp_path / "out" / "new-shoes.png"), dtype=np.float32)
    original = np.asarray(Image.open(tmp_path / "photo.png"), dtype=np.float32)
    outside = np.asarray(feathered_alpha(region, DEFAULT_FEATHER)) == 0
    assert edited.shape == original.shape
    np.testing.assert_allclose(edited[outside], original[outside], atol=1.0)
    parameters = json.loads((tmp_path / "out" / "new-shoes.json").read_text())
    assert parameters["mode"] == "edit" and parameters["inputs"]["region"].endswith("region.png")
    assert parameters["batch"]["line"] == 1
