"""The official checkpoint layout <-> pipeline components: Hub ids, revisions, strict loading.

Layout (`huanngzh/Parts2Whole`): model_index.json, unet/, reference_unet/, pose_guider/ (diffusers
safetensors, float32), vae/, text_encoder/, image_encoder/ (stored float16, computed in the requested
dtype), tokenizer/, feature_extractor/, scheduler/, and decoupled_attn.pth (a safetensors file despite
its suffix) holding the 32 image key/value projections of the cross-attention layers.

UNets, the pose guider and the VAE are built on the meta device and filled with
`load_state_dict(assign=True)` after a strict check of every name and shape, so a full-size checkpoint
loads in seconds, without a random initialisation and without ever silently keeping random weights.

Thread safety: the app builds models from several threads at once (the pipeline on the first Generate,
the human parser, Segment Anything and the tiny stand-ins on the first uploads). Loading therefore
patches no process-global state. `accelerate.init_empty_weights` (used by diffusers' `from_pretrained`)
replaces `nn.Module.register_parameter` for every thread, and both diffusers' and transformers'
`from_pretrained` swap out `torch.nn.init`'s functions and the default dtype process-wide while they
build; a model another thread builds meanwhile gets meta or uninitialised parameters. So no model here
goes through a library `from_pretrained`: diffusers models are built inside `with torch.device("meta")`
(a thread-local mode), transformers models are built on the CPU in the loading thread (their computed,
non-persistent buffers such as CLIP's position ids would have no data on the meta device; building CLIP
ViT-L this way costs a few CPU seconds, once per process). A process-wide lock around model building is
deliberately not used: it would make every click and automatic mask wait behind a 7 GB load.
Tokenizers, image processors and scheduler configs build no modules and are loaded as usual.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from .attention import install_denoising_processors, install_reference_processors
from .errors import CheckpointError
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
UNSAFE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pkl")
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
    from huggingface_hub import snapshot_download

    logger.info("Fetching %s@%s from the Hub or its local cache (%s)", repo_id, revision or "main", cache_dir or "HF cache")
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=cache_dir,
                                  local_files_only=local_files_only))


def read_structure_kind(folder: str | Path) -> str:
    """The structure kind a checkpoint folder declares ("densepose" when it declares none)."""
    path = Path(folder) / METADATA_NAME
    if not path.is_file():
        return DEFAULT_STRUCTURE_KIND
    return str(json.loads(path.read_text()).get("structure_kind", DEFAULT_STRUCTURE_KIND))


def _load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pickles = [p.name for p in path.parent.glob("*") if p.suffix in UNSAFE_SUFFIXES] if path.parent.is_dir() else []
        hint = f" Found only pickled weights ({', '.join(pickles)}), which are refused: convert them to safetensors." if pickles else ""
        raise CheckpointError(f"{what}: missing weights file {path}.{hint}")
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise CheckpointError(f"{what}: {path} is not a readable safetensors file ({error}).") from error


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


def _names(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}{f' ... ({len(keys)} in all)' if len(keys) > limit else ''}"


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str, *,
                           assign: bool = True) -> None:
    """Fill `model` (possibly on the meta device: `assign` then adopts the tensors) with `state_dict`,
    refusing any missing, unexpected or mis-shaped tensor with an error that names them."""
    expected = model.state_dict()
    missing = expected.keys() - state_dict.keys()
    unexpected = state_dict.keys() - expected.keys()
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(expected[k].shape)})"
             for k in expected.keys() & state_dict.keys() if state_dict[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_names(wrong)}")
    if problems:
        raise CheckpointError(f"{what} does not match its config; " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True, assign=assign)


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


def check_materialized(model: torch.nn.Module, what: str) -> None:
    """Refuse a model that still holds meta tensors after loading (a tensor nothing filled)."""
    left = [name for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()) if tensor.is_meta]
    if left:
        raise CheckpointError(f"{what}: no values were loaded for {_names(left)}")


def load_diffusers_model(cls, folder: Path, what: str, dtype: torch.dtype | None = None):
    """A diffusers model from `folder` (config.json + diffusion_pytorch_model.safetensors): built on the
    meta device in this thread, filled strictly, never through `from_pretrained` (see the module docstring)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what}: missing {folder / 'config.json'}.")
    with torch.device("meta"):
        model = cls.from_config(cls.load_config(folder))
    load_state_dict_strict(model, _cast(_load_safetensors(folder / WEIGHTS_NAME, what), dtype), what)
    check_materialized(model, what)
    return model.eval().requires_grad_(False)


#: transformers weight files read by `load_transformers_model`, safest first. The pickle is read with
#: `torch.load(weights_only=True)`, which rebuilds tensors only.
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _transformers_names(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> the model's names, by the renamings transformers registers for the model class
    (its checkpoint conversion mapping, the table its own `from_pretrained` applies: e.g. CLIPTextModel
    files saved before transformers 5 carry a `text_model.` prefix the class no longer has)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    expected = model.state_dict()
    renamed = {}
    for name, tensor in state.items():
        new_name, _ = rename_source_key(name, renamings, [], model.base_model_prefix, expected)
        renamed[name if new_name not in expected and name in expected else new_name] = tensor
    return renamed


def load_transformers_model(cls, folder: Path, what: str, dtype: torch.dtype | None = None, *,
                            allow_torch_file: bool = False):
    """A transformers model from a `save_pretrained` folder, built on the CPU in this thread (never through
    `from_pretrained`, see the module docstring) and filled strictly. Tensors the model computes itself
    (non-persistent buffers such as position ids, stored by older exports) are taken from the model."""
    folder = Path(folder)
    names = TRANSFORMERS_WEIGHT_FILES if allow_torch_file else TRANSFORMERS_WEIGHT_FILES[:1]
    weights = next((folder / name for name in names if (folder / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{what}: missing {folder / names[0]} (only safetensors weights are loaded).")
    if weights.suffix == ".safetensors":
        state = _load_safetensors(weights, what)
    else:
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure means: not a safe weights file
            raise CheckpointError(f"{what}: {weights} is not a weights-only torch file ({error}).") from error
    config = cls.config_class.from_pretrained(folder)
    # A config's dtype makes nested `_from_config` calls (CLIPVisionModelWithProjection builds its
    # CLIPVisionModel so) set torch's default dtype for the whole process while they build: leave it
    # unset, build in float32, and cast once loaded.
    for sub_config in (config, *(getattr(config, key) for key in config.sub_configs)):
        if sub_config is not None:
            sub_config.dtype = None
    model = cls(config)
    state = _transformers_names(model, state)
    computed = set(dict(model.named_buffers())) - set(model.state_dict())
    state = {name: tensor for name, tensor in state.items() if name not in computed}
    load_state_dict_strict(model, state, what, assign=False)
    if dtype is not None and model.dtype != dtype:
        model.to(dtype=dtype)
    model.config.dtype = model.dtype
    return model.eval().requires_grad_(False)


def load_components(folder: Path, *, use_decoupled_cross_attn: bool = True, torch_dtype: torch.dtype = torch.float32,
                    vae: AutoencoderKL | None = None) -> dict:
    """Every pipeline component from a local folder in the official layout."""
    folder = Path(folder)
    if not (folder / "unet" / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a Parts2Whole checkpoint (no unet/config.json).")

    unet = build_unet(UNet2DConditionModel.load_config(folder / "unet"), decoupled=use_decoupled_cross_attn)
    unet_state = _load_safetensors(folder / "unet" / WEIGHTS_NAME, "unet")
    # The official export saved the UNet with the decoupled processors installed: those tensors may or
    # may not be in the unet file; their values always come from decoupled_attn.pth.
    unet_state = {k: v for k, v in unet_state.items() if DECOUPLED_KEY_MARKER not in k}
    if use_decoupled_cross_attn:
        unet_state.update(_load_decoupled(folder / DECOUPLED_WEIGHTS_NAME))
    load_state_dict_strict(unet, _cast(unet_state, torch_dtype), "unet (+ decoupled_attn.pth)")
    check_materialized(unet, "unet")

    reference_unet = build_reference_unet(ReferenceUNet2DConditionModel.load_config(folder / "reference_unet"))
    load_state_dict_strict(reference_unet, _cast(_load_safetensors(folder / "reference_unet" / WEIGHTS_NAME,
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
