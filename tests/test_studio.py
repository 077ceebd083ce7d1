"""The studio: lazy single load, device choice, offline fallback, progress, and the reference cache."""

from __future__ import annotations

import dataclasses
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from app_fixtures import WEIGHTS_DIR, example_file
from tolerances import assert_same_pixels
from parts2whole import studio as studio_module
from parts2whole.studio import service as service_module
from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.studio import (
    GenerationRequest, ReferenceCache, ResolvedWeights, Studio, choose_device, resolve_weights,
)

FAKE_WEIGHTS = ResolvedWeights(path="fake-checkpoint", name="fake")


@dataclasses.dataclass
class FakeEncoding:
    """Stands in for ReferenceEncoding: one row per reference, split and combined like it (so the studio's
    per-reference cache treats it as the real thing)."""

    tensor: torch.Tensor
    labels: tuple[str, ...]

    def split(self) -> list["FakeEncoding"]:
        return [FakeEncoding(self.tensor[index:index + 1].clone(), (label,)) for index, label in enumerate(self.labels)]

    @classmethod
    def combine(cls, parts: list["FakeEncoding"]) -> "FakeEncoding":
        return cls(torch.cat([part.tensor for part in parts]), tuple(label for part in parts for label in part.labels))


class FakePipeline:
    """Stands in for Parts2WholePipeline: counts reference encodings, runs the step callbacks."""

    structure_kind = "densepose"

    def __init__(self):
        self.encode_calls = 0
        self.calls = []

    def to(self, device):
        self.device = device
        return self

    def encode_checked(self, references, height, width, fusion_blocks):
        self.encode_calls += 1
        return FakeEncoding(torch.zeros(len(references.images), 8), tuple(references.labels))

    def generate_checked(self, request, *, reference_encoding, callback_on_step_end, **kwargs):
        assert request.settings.output_type == "latent" and reference_encoding is not None
        self.calls.append(request)
        latents = torch.zeros(request.settings.num_images_per_prompt, 4, request.height // 8, request.width // 8)
        for step in range(request.settings.num_inference_steps):
            callback_on_step_end(self, step, 999 - step, {"latents": latents})
        return SimpleNamespace(images=latents)

    def decode_latents(self, latents, output_type="pil"):
        return [Image.new("RGB", (latents.shape[3] * 8, latents.shape[2] * 8)) for _ in range(latents.shape[0])]


def fake_studio(**kwargs) -> tuple[Studio, FakePipeline]:
    pipe = FakePipeline()
    return Studio(loader=lambda weights, choice: pipe, resolver=lambda spec: FAKE_WEIGHTS, device="cpu",
                  **kwargs), pipe


def small_request(**overrides) -> GenerationRequest:
    values = dict(references={"face": Image.open(example_file("face")),
                              "upper body clothes": Image.open(example_file("upper_body_clothes"))},
                  structure=Image.open(example_file("pose")), prompt="a man", seed=1, steps=3, height=64, width=64)
    values.update(overrides)
    return GenerationRequest(**values)


def test_pipeline_loads_once_lazily_under_concurrency():
    loads = []

    def slow_loader(weights, choice):
        loads.append(threading.get_ident())
        time.sleep(0.3)
        return object()

    studio = Studio(loader=slow_loader, resolver=lambda spec: FAKE_WEIGHTS, device="cpu")
    assert not studio.is_loaded and loads == []  # nothing happens until someone needs the model
    results = []
    threads = [threading.Thread(target=lambda: results.append(studio.pipeline())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert len(results) == 8 and all(result is results[0] for result in results)


@pytest.mark.parametrize(("cuda", "mps", "device", "dtype"), [
    (True, True, "cuda", torch.float16),
    (False, True, "mps", torch.float16),
    (False, False, "cpu", torch.float32),
])
def test_device_and_dtype_choice(monkeypatch, cuda, mps, device, dtype):
    monkeypatch.delenv("P2W_DEVICE", raising=False)
    monkeypatch.delenv("P2W_DTYPE", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    choice = choose_device()
    assert (choice.device, choice.dtype, choice.zero_gpu) == (device, dtype, False)


def test_device_and_dtype_overrides(monkeypatch):
    monkeypatch.setenv("P2W_DEVICE", "cpu")
    monkeypatch.setenv("P2W_DTYPE", "bf16")
    assert choose_device() == studio_module.DeviceChoice("cpu", torch.bfloat16)
    assert choose_device("cuda:1", "fp32").device == "cuda:1"
    with pytest.raises(Parts2WholeInputError, match="dtype"):
        choose_device("cpu", "int3")


def test_zero_gpu_loads_on_cpu_and_moves_per_call(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.delenv("P2W_DEVICE", raising=False)
    choice = choose_device()
    assert choice.device == "cuda" and choice.zero_gpu


def test_zero_gpu_generation_passes_only_data_to_the_gpu_call(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.delenv("P2W_DEVICE", raising=False)
    pipe = FakePipeline()
    studio = Studio(loader=lambda weights, choice: pipe, resolver=lambda spec: FAKE_WEIGHTS)
    calls = []
    original = service_module._run_on_zero_gpu
    monkeypatch.setattr(service_module, "_run_on_zero_gpu",
                        lambda *args: calls.append(args) or original(*args))
    updates = []
    result = studio.generate(small_request(), progress=updates.append)
    assert pipe.device == "cuda" and len(result.images) == 1
    (studio_id, request), = calls
    assert studio_id == id(studio) and isinstance(request, GenerationRequest)
    assert updates[-1].stage == studio_module.STAGE_DONE


def test_offline_falls_back_to_tiny_with_one_line_notice(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    monkeypatch.delenv("P2W_WEIGHTS", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(WEIGHTS_DIR / "empty-hf-cache"))
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="parts2whole.studio"):
        weights = resolve_weights(None)
    assert time.monotonic() - started < 60  # (the tiny build, if any, is the slow part: seconds)
    assert weights.is_tiny
    assert "unreachable" in weights.notice and "\n" not in weights.notice
    assert any("falling back to the tiny" in record.getMessage() for record in caplog.records)
    studio = Studio(resolver=lambda spec: weights)
    assert studio.is_tiny and "tiny random" in studio.banner()


def test_unreachable_hub_is_detected_quickly(monkeypatch):
    """No offline flag, but nothing answers: still a fast, explained fallback (never minutes)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(WEIGHTS_DIR / "empty-hf-cache"))
    started = time.monotonic()
    weights = resolve_weights("someone/some-parts2whole")
    assert time.monotonic() - started < studio_module.HUB_TIMEOUT_S * 3
    assert weights.is_tiny and "unreachable" in weights.notice


def test_explicit_tiny_and_bad_folder(monkeypatch):
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    assert resolve_weights("tiny").is_tiny and resolve_weights("tiny").notice is None
    with pytest.raises(studio_module.CheckpointError, match="no such folder"):
        resolve_weights("./does/not/exist")


def test_progress_reports_every_stage_in_order():
    studio, _ = fake_studio()
    updates = []
    studio.generate(small_request(steps=4), progress=updates.append)
    stages = [update.stage for update in updates]
    assert stages[0] == studio_module.STAGE_PREPROCESSING
    assert stages.index(studio_module.STAGE_ENCODING) < stages.index(studio_module.STAGE_DENOISING)
    assert [u.step for u in updates if u.stage == studio_module.STAGE_DENOISING] == [0, 1, 2, 3, 4]
    assert stages[-2:] == [studio_module.STAGE_DECODING, studio_module.STAGE_DONE]
    fractions = [update.fraction for update in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_new_seed_or_prompt_reuses_the_reference_encoding():
    studio, pipe = fake_studio()
    first = studio.generate(small_request(seed=1))
    again = studio.generate(small_request(seed=2, prompt="another prompt", steps=5))
    assert pipe.encode_calls == 1
    assert not first.reused_references and again.reused_references
    studio.generate(small_request(masks={"face": Image.new("L", (256, 256), 255)}))  # new mask: new encoding
    studio.generate(small_request(height=128))  # new size: new encoding
    studio.generate(small_request(fusion_blocks="midup"))
    assert pipe.encode_calls == 4


def test_cache_is_keyed_by_content_not_by_object():
    studio, pipe = fake_studio()
    studio.generate(small_request())
    copy = {label: image.copy() for label, image in small_request().references.items()}
    studio.generate(small_request(references=copy))
    assert pipe.encode_calls == 1
    changed = dict(copy)
    changed["face"] = copy["face"].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    studio.generate(small_request(references=changed))
    assert pipe.encode_calls == 2


def test_cache_is_bounded_in_bytes_and_evicts_least_recently_used():
    item = torch.zeros(256)  # 1 KiB of float32
    cache = ReferenceCache(max_bytes=3 * 1024)
    for key in "abc":
        cache.put(key, {"features": item.clone()})
    assert cache.get("a") is not None  # touch "a": "b" is now the oldest
    cache.put("d", {"features": item.clone()})
    assert "b" not in cache and all(key in cache for key in "acd")
    assert cache.total_bytes <= cache.max_bytes
    cache.put("huge", {"features": torch.zeros(4096)})
    assert "huge" not in cache and len(cache) == 3


def test_bad_input_is_a_user_error():
    studio, _ = fake_studio()
    with pytest.raises(Parts2WholeInputError, match="at least one reference"):
        studio.generate(small_request(references={}))
    with pytest.raises(Parts2WholeInputError, match="pose"):
        studio.generate(small_request(structure=None))
    with pytest.raises(Parts2WholeInputError, match="multiple of 8"):
        studio.generate(small_request(height=100))
    with pytest.raises(Parts2WholeInputError, match="empty"):
        studio.generate(small_request(masks={"face": Image.new("L", (256, 256), 0)}))


def test_tiny_model_generates_and_reproduces(monkeypatch):
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    studio = Studio("tiny", device="cpu")
    encodes = []
    pipe = studio.pipeline()
    original = pipe.encode_checked
    monkeypatch.setattr(pipe, "encode_checked", lambda *a, **k: encodes.append(1) or original(*a, **k))
    first = studio.generate(small_request(seed=7, steps=2))
    second = studio.generate(small_request(seed=7, steps=2))
    assert len(encodes) == 1 and second.reused_references
    assert first.images[0].size == (64, 64)
    assert_same_pixels(first.images[0], second.images[0])
    assert first.parameters["seed"] == 7 and first.parameters["tiny_model"] is True
