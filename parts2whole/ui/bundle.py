"""The download bundle of a generation: a zip with the inputs, masks, pose map, parameters (where each
input came from included), the results and a README with the command that makes them again."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from PIL import Image

from parts2whole import examples as examples_module
from parts2whole import studio as studio_module

logger = logging.getLogger("parts2whole.app")

#: Bundles older than this are deleted when a new one is written (they are also in Gradio's cache).
BUNDLE_MAX_AGE_S = 3600
BUNDLE_ROOT = Path(tempfile.gettempdir()) / "parts2whole-bundles"


def write_bundle(result: studio_module.GenerationResult, inputs: dict[str, str], mask_sources: dict[str, str],
                 extra_parameters: dict | None = None, extra_files: dict[str, bytes] | None = None) -> Path:
    """A zip with everything needed to reproduce the result: inputs, masks, pose map, parameters, outputs."""
    remove_old_bundles()
    folder = BUNDLE_ROOT / uuid.uuid4().hex
    folder.mkdir(parents=True)
    request = result.request
    path = folder / f"parts2whole-seed{request.seed}.zip"
    parameters = result.parameters | {"mask_sources": mask_sources, "original_files": inputs} | (extra_parameters or {})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for label, image in request.references.items():
            stem = label.replace(" ", "_")
            bundle.writestr(f"inputs/{stem}.png", studio_module.png_bytes(image))
            mask = request.masks.get(label)
            mask = studio_module.default_mask(image) if mask is None else mask
            bundle.writestr(f"masks/{stem}.png", studio_module.png_bytes(mask))
        bundle.writestr("inputs/pose.png", studio_module.png_bytes(request.structure))
        for name, data in (extra_files or {}).items():
            bundle.writestr(name, data)
        for index, image in enumerate(result.images):
            bundle.writestr(f"results/result_{index}.png", studio_module.png_bytes(image))
        bundle.writestr("parameters.json", studio_module.parameters_json(parameters))
        bundle.writestr("README.txt", bundle_readme(request))
    return path


def bundle_readme(request: studio_module.GenerationRequest) -> str:
    parts = " ".join(f"--{label.replace(' ', '-')} inputs/{label.replace(' ', '_')}.png "
                     f"--mask-{label.replace(' ', '-')} masks/{label.replace(' ', '_')}.png"
                     for label in request.references)
    return (
        "Made with the Parts2Whole studio. parameters.json holds every setting; to reproduce from this folder:\n\n"
        f"python -m parts2whole generate {parts} --pose inputs/pose.png --prompt {json.dumps(request.prompt)} "
        f"--negative-prompt {json.dumps(request.negative_prompt)} --seed {request.seed} --steps {request.steps} "
        f"--guidance {request.guidance_scale} --height {request.height} --width {request.width} "
        f"--num-images {request.num_images} --fusion-blocks {request.fusion_blocks} --scheduler {request.scheduler} "
        "-o results/again.png\n"
    )


def remove_old_bundles() -> None:
    if not BUNDLE_ROOT.is_dir():
        return
    cutoff = time.time() - BUNDLE_MAX_AGE_S
    for folder in BUNDLE_ROOT.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def dataset_sources(references: dict, structure: Image.Image | None) -> dict:
    """For the bundle: which dataset sample each input came from (the photo examples and the pose gallery)."""
    try:
        found = {label: examples_module.dataset_source(image) for label, image in references.items()}
        found["pose"] = examples_module.dataset_source(structure)
    except Exception:  # noqa: BLE001 - provenance is a nice-to-have, never a failure
        logger.exception("could not trace the inputs to the dataset")
        return {}
    found = {key: value for key, value in found.items() if value}
    if not found:
        return {}
    extra = {"dataset_sources": found}
    if "pose" in found:
        pose = found["pose"]
        extra["pose_source"] = f"{pose['dataset']}@{pose['revision'][:7]} test sample {pose['sample']}"
    return extra
