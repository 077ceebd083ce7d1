"""Segment Anything click-to-refine with a tiny SAM built from segment-anything's own modules."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest_preprocess import build_tiny_sam
from tolerances import assert_masks_agree
from parts2whole.core.errors import CheckpointError, Parts2WholeInputError
from preprocess import sam as sam_module
from preprocess.sam import (
    SAM_CHECKPOINT_FILES,
    SAM_CHECKPOINT_MD5,
    ClickState,
    EmbeddingCache,
    ImageEmbedding,
    SamSegmenter,
    load_sam_weights,
    read_state_dict,
    select_best_mask,
)

@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Tiny models on a shared 2-core CPU: thread hand-offs cost more than the maths."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_sam():
    return build_tiny_sam()


@pytest.fixture()
def segmenter(tiny_sam):
    return SamSegmenter(tiny_sam, cache=EmbeddingCache(max_entries=4), decoder_backend="torch")


def _photo(width=96, height=72, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _count_encoder_calls(sam):
    calls = []
    sam.image_encoder.register_forward_hook(lambda module, inputs, output: calls.append(1))
    return calls


# --- click bookkeeping ----------------------------------------------------------------------------


def test_click_state_is_immutable_and_undo_drops_the_stale_logits():
    state = ClickState(image_key="a").add_click(3, 4).add_click(10, 12, positive=False)
    assert [(c.x, c.y, c.positive) for c in state.clicks] == [(3, 4, True), (10, 12, False)]
    with_logits = state.with_logits(np.ones((1, 16, 16), np.float32))
    undone = with_logits.undo()
    assert len(undone.clicks) == 1 and undone.low_res_logits is None
    assert len(with_logits.clicks) == 2 and with_logits.low_res_logits is not None  # untouched


def test_box_is_normalised_and_clear_keeps_the_image():
    state = ClickState(image_key="k").with_box((50, 40, 10, 5))
    assert state.box == (10.0, 5.0, 50.0, 40.0)
    assert state.has_prompt and not state.is_ambiguous
    cleared = state.add_click(1, 1).clear()
    assert cleared.image_key == "k" and not cleared.has_prompt


def test_state_resets_for_another_image_only():
    state = ClickState(image_key="a").add_click(1, 2)
    assert state.for_image("a") is state
    assert state.for_image("b").clicks == ()


def test_single_click_is_the_only_ambiguous_prompt():
    one = ClickState().add_click(1, 1)
    assert one.is_ambiguous
    assert not one.add_click(2, 2).is_ambiguous
    assert not one.with_logits(np.zeros((1, 4, 4), np.float32)).is_ambiguous


def test_state_from_a_parser_mask_boxes_it():
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:20, 5:25] = True
    state = sam_module.click_state_from_mask(Image.fromarray(mask.astype(np.uint8) * 255), image_key="k")
    assert state.box == (5.0, 10.0, 25.0, 20.0) and state.image_key == "k" and not state.clicks
    assert not sam_module.click_state_from_mask(np.zeros((4, 4), dtype=bool)).has_prompt


def test_best_mask_is_the_highest_predicted_iou():
    assert select_best_mask(np.array([0.2, 0.9, 0.5])) == 1
    assert select_best_mask(np.array([[0.7, 0.1, 0.6]])) == 0


# --- cache ----------------------------------------------------------------------------------------


def _embedding(nbytes_floats: int) -> ImageEmbedding:
    return ImageEmbedding(torch.zeros(1, nbytes_floats), (8, 8), (8, 8))


def test_cache_evicts_least_recently_used_by_count():
    cache = EmbeddingCache(max_entries=2, max_bytes=10**9)
    cache.put("a", _embedding(1))
    cache.put("b", _embedding(1))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", _embedding(1))
    assert "a" in cache and "c" in cache and "b" not in cache


def test_cache_is_bounded_by_bytes_but_keeps_the_newest():
    cache = EmbeddingCache(max_entries=100, max_bytes=4 * 250)
    for key in "abcd":
        cache.put(key, _embedding(100))  # 400 bytes each
    assert len(cache) == 2 and "d" in cache and cache.nbytes <= 1000
    cache.put("huge", _embedding(10_000))
    assert len(cache) == 1 and "huge" in cache  # never evicts the entry just added


# --- prediction -----------------------------------------------------------------------------------


def test_mask_has_the_image_size_and_the_state_carries_logits(segmenter):
    image = _photo()
    result = segmenter.predict(image, ClickState().add_click(40, 30))
    assert result.mask.mode == "L" and result.mask.size == image.size
    assert set(np.unique(np.asarray(result.mask))) <= {0, 255}
    assert result.state.low_res_logits.shape == (1, 16, 16)
    assert result.state.image_key == segmenter.image_key(image)
    assert np.isfinite(result.score)


def test_embedding_is_computed_once_per_image(tiny_sam):
    segmenter = SamSegmenter(tiny_sam, cache=EmbeddingCache(max_entries=4), decoder_backend="torch")
    calls = _count_encoder_calls(tiny_sam)
    image, other = _photo(seed=1), _photo(seed=2)
    state = ClickState()
    for x in (10, 20, 30, 40):
        state = segmenter.predict(image, state.add_click(x, 20)).state
    assert len(calls) == 1
    segmenter.predict(np.asarray(image), ClickState().add_click(5, 5))  # same pixels, other container
    assert len(calls) == 1
    segmenter.predict(other, ClickState().add_click(5, 5))
    assert len(calls) == 2


def test_no_prompt_is_a_clear_input_error(segmenter):
    with pytest.raises(Parts2WholeInputError, match="Click on the part"):
        segmenter.predict(_photo(), ClickState())


def _spy_prompt_encoder(sam, seen):
    original = sam.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen.append({"points": points, "boxes": boxes, "masks": masks})
        return original(points, boxes, masks)

    sam.prompt_encoder.forward = spy
    return original


def test_prompts_are_mapped_to_the_model_frame_and_logits_fed_back(tiny_sam):
    segmenter = SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="torch")
    seen = []
    original = _spy_prompt_encoder(tiny_sam, seen)
    try:
        image = _photo(width=128, height=64)  # long side 128 -> 64: everything is halved
        first = segmenter.predict(image, ClickState().add_click(100, 40))
        segmenter.predict(image, first.state.add_click(20, 10, positive=False).with_box((8, 4, 120, 60)))
    finally:
        tiny_sam.prompt_encoder.forward = original
    coords, labels = seen[0]["points"]
    assert coords.tolist() == [[[50.0, 20.0]]] and labels.tolist() == [[1]]
    assert seen[0]["masks"] is None
    coords, labels = seen[1]["points"]
    assert coords.tolist() == [[[50.0, 20.0], [10.0, 5.0]]] and labels.tolist() == [[1, 0]]
    assert seen[1]["boxes"].tolist() == [[4.0, 2.0, 60.0, 30.0]]
    assert seen[1]["masks"].shape == (1, 1, 16, 16)
    assert torch.equal(seen[1]["masks"][0], torch.as_tensor(first.state.low_res_logits))


def test_logits_of_another_image_are_not_fed_back(tiny_sam):
    segmenter = SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="torch")
    first = segmenter.predict(_photo(seed=1), ClickState().add_click(10, 10))
    seen = []
    original = _spy_prompt_encoder(tiny_sam, seen)
    try:
        segmenter.predict(_photo(seed=2), first.state.add_click(20, 20))
    finally:
        tiny_sam.prompt_encoder.forward = original
    assert seen[0]["masks"] is None


@pytest.fixture(scope="module")
def onnx_segmenter(tiny_sam):
    segmenter = SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="onnxruntime")
    assert segmenter.prepare_decoder() == "onnxruntime"
    return segmenter


@pytest.fixture(params=["torch", "onnxruntime"])
def any_backend(request, tiny_sam, onnx_segmenter):
    if request.param == "onnxruntime":
        return onnx_segmenter
    return SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="torch")


@pytest.mark.parametrize("clicks, box", [([(40, 30, True)], None), ([(40, 30, True), (70, 50, False)], (5, 5, 90, 70))])
def test_matches_segment_anythings_own_predictor(tiny_sam, any_backend, clicks, box):
    from segment_anything import SamPredictor

    image = _photo()
    state = ClickState()
    for x, y, positive in clicks:
        state = state.add_click(x, y, positive)
    if box is not None:
        state = state.with_box(box)
    ours = any_backend.predict(image, state)

    predictor = SamPredictor(tiny_sam)
    predictor.set_image(np.asarray(image))
    masks, scores, low_res = predictor.predict(
        point_coords=np.array([[x, y] for x, y, _ in clicks], dtype=np.float32),
        point_labels=np.array([int(p) for _, _, p in clicks]),
        box=None if box is None else np.array(box, dtype=np.float32),
        multimask_output=state.is_ambiguous,
    )
    best = int(np.argmax(scores))
    assert_masks_agree(np.asarray(ours.mask) > 0, masks[best])
    assert ours.score == pytest.approx(float(scores[best]), abs=1e-5)
    np.testing.assert_allclose(ours.state.low_res_logits, low_res[best : best + 1], atol=1e-5)


def test_concurrent_users_get_their_own_images_masks(tiny_sam):
    segmenter = SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="torch")
    images = [_photo(seed=seed) for seed in range(4)]
    prompts = [ClickState().add_click(10 + 15 * i, 12 + 10 * i) for i in range(4)]
    expected = [np.asarray(segmenter.predict(img, st).mask) for img, st in zip(images, prompts)]
    fresh = SamSegmenter(tiny_sam, cache=EmbeddingCache())  # auto: the ONNX decoder, exported under a lock
    results = [None] * 4

    def work(index):
        for _ in range(3):
            results[index] = np.asarray(fresh.predict(images[index], prompts[index]).mask)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        assert_masks_agree(got, want)


def test_onnx_and_torch_decoders_agree_on_a_refinement_with_box_and_logits(tiny_sam, onnx_segmenter):
    torch_segmenter = SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="torch")
    image = _photo(width=80, height=120)
    state = ClickState().add_click(30, 50)
    for clicks in range(3):
        ours, reference = onnx_segmenter.predict(image, state), torch_segmenter.predict(image, state)
        np.testing.assert_allclose(ours.state.low_res_logits, reference.state.low_res_logits, atol=1e-4)
        assert_masks_agree(ours.mask, reference.mask)
        state = reference.state.add_click(10 + 20 * clicks, 90, positive=clicks % 2 == 0).with_box((5, 5, 70, 110))
    only_box = ClickState().with_box((5, 5, 70, 110))
    np.testing.assert_allclose(
        onnx_segmenter.predict(image, only_box).state.low_res_logits,
        torch_segmenter.predict(image, only_box).state.low_res_logits,
        atol=1e-4,
    )


def test_failed_onnx_export_falls_back_to_torch_only_in_auto_mode(tiny_sam, monkeypatch):
    def broken_export(sam):
        raise ModuleNotFoundError("No module named 'onnx'")

    monkeypatch.setattr(sam_module, "export_prompt_decoder", broken_export)
    auto = SamSegmenter(tiny_sam, cache=EmbeddingCache())
    assert auto.prepare_decoder() == "torch"
    assert auto.predict(_photo(), ClickState().add_click(5, 5)).mask.size == (96, 72)
    strict = SamSegmenter(tiny_sam, cache=EmbeddingCache(), decoder_backend="onnxruntime")
    with pytest.raises(CheckpointError, match="ONNX"):
        strict.predict(_photo(), ClickState().add_click(5, 5))


# --- checkpoints ----------------------------------------------------------------------------------


def test_checkpoint_round_trip_through_the_real_loader(tmp_path):
    source = build_tiny_sam(seed=1)
    path = tmp_path / "tiny_sam.pth"
    torch.save(source.state_dict(), path)
    target = load_sam_weights(build_tiny_sam(seed=2), path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[name]), name


def test_safetensors_checkpoint_loads_too(tmp_path):
    from safetensors.torch import save_file

    source = build_tiny_sam(seed=3)
    path = tmp_path / "tiny_sam.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = load_sam_weights(build_tiny_sam(seed=4), path)
    name = "mask_decoder.iou_token.weight"
    assert torch.equal(source.state_dict()[name], target.state_dict()[name])


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"payload": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        read_state_dict(path)


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    path = tmp_path / "partial.pth"
    state = build_tiny_sam().state_dict()
    state.pop("mask_decoder.iou_token.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_sam_weights(build_tiny_sam(), path)


def test_missing_checkpoint_and_unknown_variant(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(Parts2WholeInputError, match="Unknown SAM model"):
        sam_module.download_sam_checkpoint("vit_xxl")


def _fake_hub(tmp_path, monkeypatch, content: bytes):
    """Route hf_hub_download to a function writing ``content``; returns the list of requests made."""
    import huggingface_hub

    requested = []

    def fake_download(repo_id, filename, revision=None, local_dir=None):
        requested.append((repo_id, filename, revision))
        target = tmp_path / "sam" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return str(target)

    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return requested


def test_download_is_pinned_to_a_commit_and_uses_the_official_file_names(tmp_path, monkeypatch):
    content = b"official bytes"
    monkeypatch.setitem(sam_module.SAM_CHECKPOINT_MD5, "vit_b", hashlib.md5(content).hexdigest())
    requested = _fake_hub(tmp_path, monkeypatch, content)
    path = sam_module.download_sam_checkpoint("vit_b")
    assert re.fullmatch(r"[0-9a-f]{40}", sam_module.SAM_REVISION)  # a commit, not a branch
    assert requested == [("ybelkada/segment-anything", "checkpoints/sam_vit_b_01ec64.pth", sam_module.SAM_REVISION)]
    assert path == tmp_path / "sam" / SAM_CHECKPOINT_FILES["vit_b"]
    sam_module.download_sam_checkpoint("vit_b")
    assert len(requested) == 1  # second call: found on disk, no network


def test_a_checkpoint_with_other_bytes_is_refused_and_a_verified_one_is_not_hashed_again(tmp_path, monkeypatch):
    _fake_hub(tmp_path, monkeypatch, b"truncated download")
    with pytest.raises(CheckpointError, match="not the official file"):
        sam_module.download_sam_checkpoint("vit_b")

    content = b"official bytes"
    monkeypatch.setitem(sam_module.SAM_CHECKPOINT_MD5, "vit_b", hashlib.md5(content).hexdigest())
    path = tmp_path / "sam" / SAM_CHECKPOINT_FILES["vit_b"]
    path.write_bytes(content)
    sam_module.download_sam_checkpoint("vit_b")
    hashed = []
    monkeypatch.setattr(sam_module.hashlib, "md5", lambda **kwargs: hashed.append(1))
    sam_module.download_sam_checkpoint("vit_b")
    assert hashed == []  # the marker next to the file records the match


def test_published_checksums_match_the_file_names():
    """Meta's checkpoint names end with the first six digits of the file's MD5: a typo would show here."""
    for variant, filename in SAM_CHECKPOINT_FILES.items():
        assert Path(filename).stem.endswith(SAM_CHECKPOINT_MD5[variant][:6])


# --- properties -----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

clicks = st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1000), st.booleans()), max_size=8)


@settings(max_examples=80, deadline=None)
@given(clicks, st.tuples(st.floats(0, 1000), st.floats(0, 1000), st.booleans()))
def test_undo_removes_exactly_the_last_click(history, last):
    state = ClickState(image_key="k")
    for x, y, positive in history:
        state = state.add_click(x, y, positive)
    after = state.add_click(*last).with_logits(np.zeros((1, 16, 16), np.float32)).undo()
    assert after.clicks == state.clicks and after.image_key == "k" and after.low_res_logits is None
