"""Loading weights safely and strictly, without patching any process-global state.

The rules every loader of the project follows (the diffusion checkpoint in `parts2whole.model.loading`,
the human parser in `preprocess.parsing`):

* Weights come from safetensors, or from a torch file read with `torch.load(weights_only=True)`, which
  rebuilds tensors only: a pickle is a program, and an arbitrary one is never run.
* A model is filled strictly: a missing, unexpected or mis-shaped tensor is a `CheckpointError` that
  names it, never a model that silently keeps random weights.
* Thread safety: the app builds models from several threads at once (the pipeline on the first
  Generate, the parser, Segment Anything and the tiny stand-ins on the first uploads). transformers'
  `from_pretrained` swaps out `torch.nn.init`'s functions and the default dtype process-wide while it
  builds, so a model another thread builds meanwhile gets uninitialised parameters. Transformers models
  are therefore built here on the CPU in the loading thread (their computed, non-persistent buffers
  such as CLIP's position ids would have no data on the meta device) and filled with
  `load_state_dict`. A process-wide lock is deliberately not used: every click and automatic mask would
  wait behind a 7 GB load.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError

#: Weight files that are pickles: never loaded as such (convert them to safetensors).
UNSAFE_SUFFIXES = (".bin", ".pt", ".ckpt", ".pkl")


def load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pickles = [p.name for p in path.parent.glob("*") if p.suffix in UNSAFE_SUFFIXES] if path.parent.is_dir() else []
        hint = f" Found only pickled weights ({', '.join(pickles)}), which are refused: convert them to safetensors." if pickles else ""
        raise CheckpointError(f"{what}: missing weights file {path}.{hint}")
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise CheckpointError(f"{what}: {path} is not a readable safetensors file ({error}).") from error


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


def check_materialized(model: torch.nn.Module, what: str) -> None:
    """Refuse a model that still holds meta tensors after loading (a tensor nothing filled)."""
    left = [name for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()) if tensor.is_meta]
    if left:
        raise CheckpointError(f"{what}: no values were loaded for {_names(left)}")


#: transformers weight files read by `load_transformers_model`, safest first. The pickle is read with
#: `torch.load(weights_only=True)`, which rebuilds tensors only.
TRANSFORMERS_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _transformers_names(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> the model's names, by the renamings transformers registers for the model class
    (its checkpoint conversion mapping, the table its own `from_pretrained` applies: e.g. CLIPTextModel
    files saved before transformers 5 carry a `text_model.` prefix the class no longer has)."""
    from transformers.conversion_mapping import get_model_conversion_mapping  # heavy: imported on first use, keeps importing this package light
    from transformers.core_model_loading import WeightRenaming, rename_source_key  # heavy: imported on first use, keeps importing this package light

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
        state = load_safetensors(weights, what)
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
