"""The loader takes the official layout strictly: real SD1.5 names and shapes, clear errors, no pickles."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from parts2whole import CheckpointError, Parts2WholePipeline
from parts2whole.model import loading
from parts2whole.model.loading import build_reference_unet, build_unet
from parts2whole.model.models import PoseGuider
from tolerances import assert_same_run


@pytest.fixture(scope="module")
def sd15(golden_root):
    return json.loads((golden_root / "sd15_state_dict_shapes.json").read_text())


def shapes(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_sd15_unet_names_and_shapes_match_the_real_checkpoint(sd15):
    plain = build_unet(sd15["unet_config"], decoupled=False)
    assert shapes(plain) == sd15["unet"]
    decoupled = build_unet(sd15["unet_config"], decoupled=True)
    assert next(decoupled.parameters()).device.type == "meta"
    assert shapes(decoupled) == sd15["unet"] | sd15["decoupled_attn"]


def test_sd15_reference_unet_and_pose_guider_match_the_real_checkpoint(sd15):
    assert shapes(build_reference_unet(sd15["unet_config"])) == sd15["reference_unet"]
    missing = set(sd15["unet"]) - set(sd15["reference_unet"])
    assert sorted(missing) == sorted(sd15["reference_unet_missing_vs_unet"])
    with torch.device("meta"):
        guider = PoseGuider(**sd15["pose_guider_config"])
    assert shapes(guider) == sd15["pose_guider"]


@pytest.fixture
def tiny_copy(tiny_checkpoint, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    return target


def _edit_weights(path, edit):
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def generate(pipe, **overrides):
    image = Image.new("RGB", (48, 64), (180, 40, 60))
    kwargs = dict(references={"face": image}, structure=Image.new("RGB", (64, 64)), prompt="a woman", height=64,
                  width=64, num_inference_steps=2, latents=np.ones((1, 4, 8, 8), np.float32) * 0.3, output_type="np")
    return pipe(**(kwargs | overrides)).images


def test_unet_file_with_or_without_decoupled_tensors_loads_the_same(tiny_checkpoint, tiny_copy):
    unet_file = tiny_copy / "unet" / loading.WEIGHTS_NAME
    _edit_weights(unet_file, lambda s: [s.pop(k) for k in [k for k in s if loading.DECOUPLED_KEY_MARKER in k]])
    assert not any(loading.DECOUPLED_KEY_MARKER in k for k in load_file(str(unet_file)))
    with_tensors = generate(Parts2WholePipeline.from_pretrained(tiny_checkpoint))
    without_tensors = generate(Parts2WholePipeline.from_pretrained(tiny_copy))
    assert_same_run(with_tensors, without_tensors)


def test_decoupled_values_come_from_decoupled_attn_file(tiny_copy):
    """The unet file's copies of the decoupled tensors are ignored; decoupled_attn.pth wins."""
    _edit_weights(tiny_copy / "unet" / loading.WEIGHTS_NAME,
                  lambda s: s.update({k: torch.zeros_like(v) for k, v in s.items() if loading.DECOUPLED_KEY_MARKER in k}))
    pipe = Parts2WholePipeline.from_pretrained(tiny_copy)
    expected = load_file(str(tiny_copy / loading.DECOUPLED_WEIGHTS_NAME))
    name = next(iter(expected))
    assert torch.equal(pipe.unet.state_dict()[name], expected[name])
    assert expected[name].abs().sum() > 0


@pytest.mark.parametrize("problem", ["missing", "unexpected", "wrong shape"])
def test_mismatched_tensors_are_named_in_the_error(tiny_copy, problem):
    name = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"

    def edit(state):
        if problem == "missing":
            state.pop(name)
        elif problem == "unexpected":
            state["extra.layer.weight"] = torch.zeros(2)
        else:
            state[name] = torch.zeros(3, 3)

    _edit_weights(tiny_copy / "reference_unet" / loading.WEIGHTS_NAME, edit)
    with pytest.raises(CheckpointError, match=problem) as error:
        Parts2WholePipeline.from_pretrained(tiny_copy)
    assert ("extra.layer.weight" if problem == "unexpected" else name) in str(error.value)
    assert "reference_unet" in str(error.value)


def test_missing_decoupled_file_is_an_error_unless_disabled(tiny_copy):
    (tiny_copy / loading.DECOUPLED_WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="use_decoupled_cross_attn=False"):
        Parts2WholePipeline.from_pretrained(tiny_copy)
    pipe = Parts2WholePipeline.from_pretrained(tiny_copy, use_decoupled_cross_attn=False)
    assert not pipe.uses_decoupled_cross_attn
    assert generate(pipe).shape == (1, 64, 64, 3)


def test_without_decoupled_attention_image_tokens_are_extra_text_tokens(tiny_pipe, tiny_checkpoint):
    pipe = Parts2WholePipeline.from_pretrained(tiny_checkpoint, use_decoupled_cross_attn=False)
    image = Image.new("RGB", (32, 32), "red")
    encoding = pipe.encode_references({"face": image, "shoes": image}, None, 64, 64)
    text = pipe.encode_text(["a"])
    context = pipe._context(encoding, text, text, 1)
    assert context.shape[1] == 77 + 2  # K tokens, not padded to 6
    assert tiny_pipe._context(tiny_pipe.encode_references({"face": image}, None, 64, 64), text, text, 1).shape[1] == 77 + 6


def test_float16_encoders_are_upcast_to_the_requested_dtype(tiny_checkpoint, tiny_pipe):
    stored = load_file(str(tiny_checkpoint / "text_encoder" / "model.safetensors"))
    assert next(iter(stored.values())).dtype == torch.float16
    for model in (tiny_pipe.text_encoder, tiny_pipe.image_encoder, tiny_pipe.vae, tiny_pipe.unet, tiny_pipe.reference_unet):
        assert model.dtype == torch.float32


def test_pickled_weights_are_refused(tiny_copy):
    unet_file = tiny_copy / "pose_guider" / loading.WEIGHTS_NAME
    torch.save(load_file(str(unet_file)), tiny_copy / "pose_guider" / "diffusion_pytorch_model.bin")
    unet_file.unlink()
    with pytest.raises(CheckpointError, match="pickled"):
        Parts2WholePipeline.from_pretrained(tiny_copy)


def test_not_a_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a Parts2Whole checkpoint"):
        Parts2WholePipeline.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="neither a local folder nor a Hub"):
        Parts2WholePipeline.from_pretrained(str(tmp_path / "nope"))


def test_hub_downloads_are_pinned_and_limited_to_the_layout(monkeypatch, tiny_checkpoint):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tiny_checkpoint)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    Parts2WholePipeline.from_pretrained(loading.OFFICIAL_REPO_ID)
    repo_id, kwargs = calls[-1]
    assert repo_id == "huanngzh/Parts2Whole" and kwargs["revision"] == loading.OFFICIAL_REVISION
    assert loading.DECOUPLED_WEIGHTS_NAME in kwargs["allow_patterns"] and "unet/*" in kwargs["allow_patterns"]
    Parts2WholePipeline.from_pretrained("someone/fork", use_decoupled_cross_attn=False, revision="abc")
    repo_id, kwargs = calls[-1]
    assert kwargs["revision"] == "abc" and loading.DECOUPLED_WEIGHTS_NAME not in kwargs["allow_patterns"]
