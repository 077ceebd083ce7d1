"""Shared fixtures: the golden fixtures beside the checkout, and tiny checkpoints built on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The parity fixtures live in ../shared/golden next to the checkout (override with P2W_GOLDEN).
GOLDEN_ROOT = Path(os.environ.get("P2W_GOLDEN", REPO_ROOT.parent / "shared" / "golden"))
#: Everything the suite downloads or builds (tiny checkpoints, conversions) goes to the checkout's weights/,
#: as under `make test`, rather than the user cache a plain `pytest` would otherwise fill.
os.environ.setdefault("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def golden_root() -> Path:
    if not (GOLDEN_ROOT / "tiny-parts2whole").is_dir():
        pytest.fail(f"golden fixtures not found at {GOLDEN_ROOT} (set P2W_GOLDEN)")
    return GOLDEN_ROOT


def load_case(root: Path, name: str) -> dict:
    """A golden case's call arguments, with images opened as the fixture README says (no conversion)."""
    case = json.loads((root / name / "case.json").read_text())
    return dict(
        case=case,
        references={k: Image.open(root / v) for k, v in case["appearance"].items()},
        masks={k: Image.open(root / v) for k, v in case["mask"].items()},
        structure=next(Image.open(root / v) for v in case["structure"].values()),
        latents=np.load(root / name / "latents.npy"),
    )


def case_kwargs(loaded: dict) -> dict:
    case = loaded["case"]
    return dict(references=loaded["references"], masks=loaded["masks"], structure=loaded["structure"],
                prompt=case["prompt"], negative_prompt=case["negative_prompt"], height=case["height"],
                width=case["width"], num_inference_steps=case["num_inference_steps"],
                guidance_scale=case["guidance_scale"], latents=loaded["latents"],
                fusion_blocks=case["reference_fusion_blocks"], num_images_per_prompt=case["num_images_per_prompt"])


@pytest.fixture(scope="session")
def golden_pipe(golden_root):
    from parts2whole import Parts2WholePipeline

    return Parts2WholePipeline.from_pretrained(golden_root / "tiny-parts2whole")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from parts2whole.model.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-parts2whole", seed=0)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_checkpoint):
    from parts2whole import Parts2WholePipeline

    return Parts2WholePipeline.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def tiny_studio():
    """A Studio on the tiny model (built into the repo's weights/ once), loaded, for one test module."""
    from app_fixtures import WEIGHTS_DIR
    from parts2whole.studio import WEIGHTS_DIR_ENV, Studio

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WEIGHTS_DIR_ENV, str(WEIGHTS_DIR))
        studio = Studio("tiny", device="cpu")
        studio.pipeline()
    return studio
