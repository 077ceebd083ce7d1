"""The official checkpoint layout <-> pipeline components: Hub ids, revisions, strict loading.

Layout (`huanngzh/Parts2Whole`): model_index.json, unet/, reference_unet/, pose_guider/ (diffusers
safetensors, float32), vae/, text_encoder/, image_encoder/ (stored float16, computed in the requested
dtype), tokenizer/, feature_extractor/, scheduler/, and decoupled_attn.pth (a safetensors file despite
its suffix) holding the 32 image key/value projections of the cross-attention layers.

UNets, the pose guider and the VAE are built on the meta device and filled with
`load_state_dict(assign=True)` after a strict check of every name and shape, so a full-size checkpoint
loads in seconds, without a random initialisation and without ever silently keeping random weights.

Thread safety: no model here goes through a library `from_pretrained`. `accelerate.init_empty_weights`
(used by diffusers' `from_pretrained`) replaces `nn.Module.register_parameter` for every thread, and
diffusers' `from_pretrained` swaps `torch.nn.init`'s functions and the default dtype process-wide. So
diffusers models are built inside `with torch.device("meta")` (a thread-local mode), and transformers
models through `parts2whole.core.checkpoints.load_transformers_model` (whose docstring says why they are
built on the CPU). Tokenizers, image processors and scheduler configs build no modules and load as usual.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from .attention import install_denoising_processors, install_reference_processors
from ..core.checkpoints import (UNSAFE_SUFFIXES, check_materialized, load_safetensors,  # noqa: F401 - re-exported
                                load_state_dict_strict, load_transformers_model)
from ..core.errors import CheckpointError
from .models import PoseGuider, ReferenceUNet2DConditionModel

logger = logging.getLogger(__name__)

OFFICIAL_REPO_ID = "huanngzh/Parts2Whole"
#: The latest revision of the official repository seen; downloads are pinned to it by default.
OFFICIAL_REVISION = "7674d1843de6c255c8a806d5087c362caff085e2"
#: The VAE the official inference script swaps in.
OFFICIAL_VAE_REPO_ID = "stabilityai/sd-vae-ft-mse"
#: A commit of that VAE repository holding config.json and diffusion_pytorch_model.safetensors.
OFFICIAL_VAE_REVISION = "31f26fdeee1355a5c34592e401dd41e45d25a493"

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
DECOUPLED_WEIGHTS_NAME = "decoupled_attn.pth"
DECOUPLED_KEY_MARKER = ".processor.to_"
#: Written by parts2whole.train next to a checkpoint it made; the released checkpoint has none.
METADATA_NAME = "parts2whole.json"
#: Files of the official layout the pipeline reads (anything else in the repo is not downloaded).
CHECKPOINT_PATTERNS = [
    "model_index.json", "unet/*", "reference_unet/*", "pose_guider/*", "vae/*", "text_encoder/*",
    "image_encoder/*", "tokenizer/*", "feature_extractor/*", "scheduler/*", DECOUPLED_WEIGHTS_NAME, METADATA_NAME,
]
#: The structure maps a checkpoint without METADATA_NAME (the released one) was trained on.
DEFAULT_STRUCTURE_KIND = "densepose"


def resolve_checkpoint(path_or_hub_id: str | Path, *, revision: str | None = None, use_decoupled_cross_attn: bool = True,
                       with_vae: bool = True, cache_dir: str | Path | None = None, local_files_only: bool = False) -> Path:
    """A local folder in the official layout, downloading `path_or_hub_id` from the Hub if it is not a folder.

    The official repository is pinned to `OFFICIAL_REVISION` unless a revision is given.
    """
    path = Path(path_or_hub_id)
    if path.is_dir():
        return path
    repo_id = str(path_or_hub_id)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise CheckpointError(f"{repo_id!r} is neither a local folder nor a Hub repository id (owner/name).")
    if revision is None and repo_id == OFFICIAL_REPO_ID:
        revision = OFFICIAL_REVISION
    patterns = [p for p in CHECKPOINT_PATTERNS
                if (use_decoupled_cross_attn or p != DECOUPLED_WEIGHTS_NAME) and (with_vae or p != "vae/*")]
    from huggingface_hub import snapshot_download  # heavy: imported on first use, keeps importing this package light

    logger.info("Fetching %s@%s from the Hub or its local cache (%s)", repo_id, revision or "main", cache_dir or "HF cache")
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=cache_dir,
                                  local_files_only=local_files_only))


def read_structure_kind(folder: str | Path) -> str:
    """The structure kind a checkpoint folder declares ("densepose" when it declares none)."""
    path = Path(folder) / METADATA_NAME
    if not path.is_file():
        return DEFAULT_STRUCTURE_KIND
    return str(json.loads(path.read_text()).get("structure_kind", DEFAULT_STRUCTURE_KIND))


def _load_decoupled(path: Path) -> dict[str, torch.Tensor]:
    """decoupled_attn.pth is a safetensors file in the official repo; a real torch file is accepted only
    through `torch.load(weights_only=True)` (no arbitrary pickles)."""
    if not path.is_file():
        raise CheckpointError(f"decoupled attention: missing {path} (pass use_decoupled_cross_attn=False to run without it).")
    try:
        return load_file(str(path))
    except SafetensorError:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure means: not a safe weights file
            raise CheckpointError(f"decoupled attention: {path} is neither safetensors nor a weights-only torch file ({error}).") from error
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"decoupled attention: {path} does not hold a flat dict of tensors.")
        return state


def build_unet(config: dict, *, decoupled: bool, empty: bool = True) -> UNet2DConditionModel:
    """The denoising UNet (stock diffusers) with the Parts2Whole processors installed; on the meta device
    (thread-local) unless `empty` is False."""
    with torch.device("meta") if empty else contextlib.nullcontext():
        unet = UNet2DConditionModel.from_config(config)
        install_denoising_processors(unet, decoupled)
    return unet


def build_reference_unet(config: dict, *, empty: bool = True) -> ReferenceUNet2DConditionModel:
    with torch.device("meta") if empty else contextlib.nullcontext():
        reference_unet = ReferenceUNet2DConditionModel.from_config(config)
    install_reference_processors(reference_unet)
    return reference_unet


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating tensors in the compute dtype before they are adopted (no second cast of the model)."""
    if dtype is None:
        return state
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}


def load_diffusers_model(cls, folder: Path, what: str, dtype: torch.dtype | None = None):
    """A diffusers model from `folder` (config.json + diffusion_pytorch_model.safetensors): built on the
    meta device in this thread, filled strictly, never through `from_pretrained` (see the module docstring)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what}: missing {folder / 'config.json'}.")
    with torch.device("meta"):
        model = cls.from_config(cls.load_config(folder))
    load_state_dict_strict(model, _cast(load_safetensors(folder / WEIGHTS_NAME, what), dtype), what)
    check_materialized(model, what)
    return model.eval().requires_grad_(False)


def load_components(folder: Path, *, use_decoupled_cross_attn: bool = True, torch_dtype: torch.dtype = torch.float32,
                    vae: AutoencoderKL | None = None) -> dict:
    """Every pipeline component from a local folder in the official layout."""
    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a Parts2Whole checkpoint (no unet/config.json).")

    unet = build_unet(UNet2DConditionModel.load_config(folder / "unet"), decoupled=use_decoupled_cross_attn)
    unet_state = load_safetensors(folder / "unet" / WEIGHTS_NAME, "unet")
    # The official export saved the UNet with the decoupled processors installed: those tensors may or
    # may not be in the unet file; their values always come from decoupled_attn.pth.
    unet_state = {k: v for k, v in unet_state.items() if DECOUPLED_KEY_MARKER not in k}
    if use_decoupled_cross_attn:
        unet_state.update(_load_decoupled(folder / DECOUPLED_WEIGHTS_NAME))
    load_state_dict_strict(unet, _cast(unet_state, torch_dtype), "unet (+ decoupled_attn.pth)")
    check_materialized(unet, "unet")

    reference_unet = build_reference_unet(ReferenceUNet2DConditionModel.load_config(folder / "reference_unet"))
    load_state_dict_strict(reference_unet, _cast(load_safetensors(folder / "reference_unet" / WEIGHTS_NAME,
                                                                   "reference_unet"), torch_dtype), "reference_unet")
    check_materialized(reference_unet, "reference_unet")

    pose_guider = load_diffusers_model(PoseGuider, folder / "pose_guider", "pose_guider", torch_dtype)
    if vae is None:
        vae = load_diffusers_model(AutoencoderKL, folder / "vae", "vae", torch_dtype)
    text_encoder = load_transformers_model(CLIPTextModel, folder / "text_encoder", "text_encoder", torch_dtype)
    image_encoder = load_transformers_model(CLIPVisionModelWithProjection, folder / "image_encoder", "image_encoder", torch_dtype)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    feature_extractor = CLIPImageProcessor.from_pretrained(folder / "feature_extractor")
    scheduler = DDIMScheduler.from_config(DDIMScheduler.load_config(folder / "scheduler"))

    for model in (unet, reference_unet, pose_guider, vae, text_encoder, image_encoder):
        if model.dtype != torch_dtype:
            model.to(dtype=torch_dtype)
        model.eval().requires_grad_(False)
    return dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
                feature_extractor=feature_extractor, unet=unet, reference_unet=reference_unet,
                pose_guider=pose_guider, scheduler=scheduler)
