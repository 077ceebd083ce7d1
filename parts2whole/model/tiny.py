"""A tiny random Parts2Whole checkpoint in exactly the official layout, built deterministically in seconds.

Tests and the offline fallback of the app use it: every loading path (float16 encoders, the decoupled
tensors in both the unet file and decoupled_attn.pth, the pruned reference UNet) is exercised as with
the real checkpoint, only with small shapes. Outputs of a tiny random model are noise-like, not people.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from .attention import install_denoising_processors
from .loading import DECOUPLED_KEY_MARKER, DECOUPLED_WEIGHTS_NAME, WEIGHTS_NAME
from .models import PoseGuider, ReferenceUNet2DConditionModel

TINY_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 32, 32),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=4, cross_attention_dim=32, attention_head_dim=2,
)
TINY_POSE_GUIDER_CONFIG = dict(conditioning_embedding_channels=8, conditioning_channels=3, block_out_channels=(4, 8, 8, 16))
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=2,
    norm_num_groups=4, sample_size=64, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
TINY_CLIP_HIDDEN = 32
TINY_CLIP_IMAGE_SIZE = 32
#: The official scheduler: DDIM on the *linear* beta schedule the model was trained with.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
    set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon", timestep_spacing="leading",
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
#: Words given whole-word merges in the tiny BPE vocabulary (the part labels and common prompt words).
TINY_VOCAB_WORDS = ("face", "hair", "or", "headwear", "upper", "lower", "whole", "body", "clothes", "shoes",
                    "a", "woman", "man", "person", "in", "red", "shirt", "dress")
#: Scale of the random weights relative to 1/sqrt(fan_in): large enough that every path matters.
WEIGHT_SCALE = 1.0
#: Norm affines and biases are drawn around their defaults with this spread, so none is trivial.
AFFINE_SPREAD = 0.1


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (printable bytes map to themselves, the rest shift)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, shift = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shift))
            shift += 1
    return chars


def _write_tokenizer(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab.update({char + "</w>": i + len(alphabet) for i, char in enumerate(alphabet)})
    merges = []
    for word in TINY_VOCAB_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            if merged not in vocab:
                merges.append(f"{pieces[0]} {pieces[1]}")
                vocab[merged] = len(vocab)
            pieces = [merged] + pieces[2:]
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, model_max_length=77, tokenizer_class="CLIPTokenizer", clean_up_tokenization_spaces=True, errors="replace")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def _randomise(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Deterministic random weights in which every norm affine and bias is non-trivial."""
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + AFFINE_SPREAD * noise)
            else:
                fan_in = param[0].numel()
                param.copy_(WEIGHT_SCALE * noise / fan_in ** 0.5)


def _save_diffusers_model(model, folder: Path, state: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_NAME))


def build_tiny_checkpoint(dest: str | Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint in the official layout to `dest` and return its path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    install_denoising_processors(unet, decoupled=True)
    _randomise(unet, generator)
    unet_state = unet.state_dict()  # includes the decoupled tensors, as the official export does
    _save_diffusers_model(unet, dest / "unet", unet_state)
    save_file({k: v.contiguous() for k, v in unet_state.items() if DECOUPLED_KEY_MARKER in k}, str(dest / DECOUPLED_WEIGHTS_NAME))

    reference_unet = ReferenceUNet2DConditionModel(**TINY_UNET_CONFIG)
    _randomise(reference_unet, generator)
    _save_diffusers_model(reference_unet, dest / "reference_unet", reference_unet.state_dict())

    pose_guider = PoseGuider(**TINY_POSE_GUIDER_CONFIG)
    _randomise(pose_guider, generator)
    _save_diffusers_model(pose_guider, dest / "pose_guider", pose_guider.state_dict())

    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    _randomise(vae, generator)
    vae.to(torch.float16).save_pretrained(dest / "vae", safe_serialization=True)

    vocab_size = _write_tokenizer(dest / "tokenizer")
    text_config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TINY_CLIP_HIDDEN, intermediate_size=2 * TINY_CLIP_HIDDEN,
                                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                 projection_dim=TINY_CLIP_HIDDEN, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                                 pad_token_id=vocab_size - 1, hidden_act="quick_gelu")
    text_encoder = CLIPTextModel(text_config)
    _randomise(text_encoder, generator)
    text_encoder.to(torch.float16).save_pretrained(dest / "text_encoder", safe_serialization=True)

    vision_config = CLIPVisionConfig(hidden_size=TINY_CLIP_HIDDEN, intermediate_size=2 * TINY_CLIP_HIDDEN, num_hidden_layers=2,
                                     num_attention_heads=4, image_size=TINY_CLIP_IMAGE_SIZE, patch_size=8,
                                     projection_dim=TINY_CLIP_HIDDEN, hidden_act="quick_gelu")
    image_encoder = CLIPVisionModelWithProjection(vision_config)
    _randomise(image_encoder, generator)
    image_encoder.to(torch.float16).save_pretrained(dest / "image_encoder", safe_serialization=True)

    (dest / "feature_extractor").mkdir(exist_ok=True)
    (dest / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(dict(
        image_processor_type="CLIPImageProcessor", do_resize=True, size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        resample=3, do_center_crop=True, crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
        do_convert_rgb=True), indent=2))
    DDIMScheduler(**SCHEDULER_CONFIG).save_config(dest / "scheduler")
    (dest / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
    return dest


#: model_index.json of the official checkpoint (custom classes are recorded under the official module paths).
MODEL_INDEX = {
    "_class_name": "Refs2ImagePipeline",
    "_diffusers_version": "0.25.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "pose_guider": ["parts2whole.models.pose_guider", "PoseGuider"],
    "reference_unet": ["parts2whole.models.reference_unet", "ReferenceUNet2DConditionModel"],
    "requires_safety_checker": False,
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["parts2whole.models.unet_2d_condition", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
