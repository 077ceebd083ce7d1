"""Write a fine-tuned model as a checkpoint in the official layout, which
`Parts2WholePipeline.from_pretrained` (and the official loader) read.

Trained modules are written from memory (float32 safetensors + config); every other folder and file is
copied byte for byte from the base checkpoint. A root file `parts2whole.json` records what the
checkpoint's pose guider understands (`structure_kind`, e.g. "openpose") and how it was made; the
official loader ignores it, and checkpoints without it are DensePose checkpoints.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.loading import (  # noqa: F401 - read_structure_kind and DEFAULT_STRUCTURE_KIND are re-exported
    DECOUPLED_KEY_MARKER, DECOUPLED_WEIGHTS_NAME, DEFAULT_STRUCTURE_KIND, METADATA_NAME, WEIGHTS_NAME, read_structure_kind,
)

#: Folders and files of the official layout that training never changes.
FROZEN_ENTRIES = ("vae", "text_encoder", "image_encoder", "tokenizer", "feature_extractor", "scheduler", "model_index.json")


def _save_module(module: torch.nn.Module, folder: Path, state: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    module.save_config(folder)
    save_file({name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in state.items()},
              str(folder / WEIGHTS_NAME))


def _copy(source: Path, destination: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    elif source.is_file():
        shutil.copy2(source, destination)
    else:
        raise FileNotFoundError(f"base checkpoint lacks {source}")


def export_checkpoint(destination: str | Path, base_folder: str | Path, *, unet: torch.nn.Module,
                      reference_unet: torch.nn.Module, pose_guider: torch.nn.Module, trained_modules: list[str],
                      structure_kind: str, training_info: dict | None = None) -> Path:
    """Write the checkpoint to `destination`; modules not in `trained_modules` are copied from the base."""
    destination, base_folder = Path(destination), Path(base_folder)
    destination.mkdir(parents=True, exist_ok=True)
    for entry in FROZEN_ENTRIES:
        _copy(base_folder / entry, destination / entry)

    if "unet" in trained_modules:
        state = unet.state_dict()
        _save_module(unet, destination / "unet", {k: v for k, v in state.items() if DECOUPLED_KEY_MARKER not in k})
        decoupled = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items() if DECOUPLED_KEY_MARKER in k}
        if decoupled:
            save_file(decoupled, str(destination / DECOUPLED_WEIGHTS_NAME))
    else:
        _copy(base_folder / "unet", destination / "unet")
        if (base_folder / DECOUPLED_WEIGHTS_NAME).is_file():
            _copy(base_folder / DECOUPLED_WEIGHTS_NAME, destination / DECOUPLED_WEIGHTS_NAME)
    for name, module in (("reference_unet", reference_unet), ("pose_guider", pose_guider)):
        if name in trained_modules:
            _save_module(module, destination / name, module.state_dict())
        else:
            _copy(base_folder / name, destination / name)

    metadata = {"structure_kind": structure_kind, "trained_modules": sorted(trained_modules)} | (training_info or {})
    (destination / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
    return destination
