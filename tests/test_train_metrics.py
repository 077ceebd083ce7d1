"""Metric plumbing on tiny random models built in code: pair-by-pair comparison (never best-of-batch),
the Fréchet distance, and the evaluate script's generate -> score -> files path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BitImageProcessor, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model,
)

from parts2whole.model.image_processing import ClipImageSettings
from parts2whole.train.dataset import PartsToWholeDataset
from parts2whole.train.evaluate import GENERATED_NAME, TARGET_NAME, generate_pairs, read_pairs, score_pairs, write_scores
from parts2whole.train.metrics import (
    ClipImageSimilarity, DinoV2Similarity, FrechetInceptionDistance, LpipsDistance, frechet_distance,
)
from test_train import make_dataset

TINY_SIDE = 32


def _images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)) for _ in range(count)]


def tiny_clip() -> ClipImageSimilarity:
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=TINY_SIDE, patch_size=8, projection_dim=16)
    processor = CLIPImageProcessor(size={"shortest_edge": TINY_SIDE}, crop_size={"height": TINY_SIDE, "width": TINY_SIDE})
    return ClipImageSimilarity(CLIPVisionModelWithProjection(config), processor)


def tiny_dinov2() -> DinoV2Similarity:
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=TINY_SIDE, patch_size=8)
    processor = BitImageProcessor(size={"shortest_edge": TINY_SIDE}, crop_size={"height": TINY_SIDE, "width": TINY_SIDE})
    return DinoV2Similarity(Dinov2Model(config), processor)


class MeanAbsoluteDifference(torch.nn.Module):
    """Stands in for the LPIPS network: same call signature, a distance per pair."""

    def forward(self, first, second):
        return (first - second).abs().mean(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize("build", [tiny_clip, tiny_dinov2])
def test_similarity_compares_each_image_with_its_own_ground_truth(build):
    metric = build()
    first, second = _images(2)
    assert metric.score_pairs([first, second], [first, second]) == pytest.approx([1.0, 1.0], abs=1e-5)
    swapped = metric.score_pairs([first, second], [second, first])
    assert max(swapped) < 1 - 1e-4  # a best-of-batch score would find the exact match and report 1.0
    with pytest.raises(ValueError):
        metric.score_pairs([first], [first, second])


def test_frechet_distance_matches_the_textbook_formula():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(200, 5)), rng.normal(loc=0.5, scale=1.5, size=(300, 5))
    assert frechet_distance(first, first) == pytest.approx(0.0, abs=1e-6)
    cov1, cov2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    expected = np.sum((first.mean(0) - second.mean(0)) ** 2) + np.trace(cov1 + cov2 - 2 * scipy_linalg.sqrtm(cov1 @ cov2).real)
    assert frechet_distance(first, second) == pytest.approx(expected, rel=1e-6)


def test_score_writes_means_and_per_pair_rows(tmp_path):
    generated, targets = _images(3, seed=1), _images(3, seed=2)
    for index, (image, target) in enumerate(zip(generated, targets)):
        (tmp_path / f"{index:05d}").mkdir()
        image.save(tmp_path / f"{index:05d}" / GENERATED_NAME)
        target.save(tmp_path / f"{index:05d}" / TARGET_NAME)
    names, generated, targets = read_pairs(tmp_path)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1))
    fid = FrechetInceptionDistance(lambda pixels: features(pixels.float() / 255))
    summary, rows = score_pairs(names, generated, targets, [tiny_clip(), LpipsDistance(MeanAbsoluteDifference())], [fid], batch_size=2)
    write_scores(tmp_path, summary, rows)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["pairs"] == 3 and set(saved) == {"pairs", "clip_image_similarity", "lpips", "fid"}
    assert saved["clip_image_similarity"]["mean"] == pytest.approx(np.mean([r["clip_image_similarity"] for r in rows]))
    assert saved["lpips"]["higher_is_better"] is False and saved["lpips"]["mean"] > 0
    assert np.isfinite(saved["fid"]["value"]) and fid.score_sets(generated, generated) == pytest.approx(0.0, abs=1e-6)
    assert (tmp_path / "scores.csv").read_text().count("\n") == 4


def test_generate_writes_one_pair_per_test_sample(tiny_pipe, tmp_path):
    root = make_dataset(tmp_path / "data")
    dataset = PartsToWholeDataset(root, "test.jsonl", "densepose", 64, 64, ClipImageSettings.from_config(tiny_pipe.feature_extractor.to_dict()))
    skipped = []
    folders = generate_pairs(tiny_pipe, dataset, tmp_path / "eval", num_samples=2, num_inference_steps=2, guidance_scale=3.5,
                             seed=0, skipped=skipped)
    # The stand-in's test line 0 has a blank DensePose map (nobody found): skipped, the next ones taken; their
    # empty-mask parts (all six labels are listed on every line) never reach the pipeline, which refuses them.
    assert [folder.name for folder in folders] == ["00001", "00002"] and skipped == [0]
    for folder in folders:
        assert Image.open(folder / GENERATED_NAME).size == Image.open(folder / TARGET_NAME).size == (64, 64)
