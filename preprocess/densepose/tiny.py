"""The tiny DensePose stand-in: the same :class:`DensePoseRCNN` with small channels and seeded weights.

Used offline and with ``--weights tiny`` (like :mod:`preprocess.tiny` for the other tools): the
whole real code path runs (resize, backbone, RPN, box head, DensePose branch, resampling, map), and
the result is a placeholder. Its weights are random except for a small stem, an RPN that proposes the
largest anchors unchanged, and the box predictor, which gives every proposal the same confident person score and grows every box to the whole picture, so the stand-in
always finds exactly one "person" covering the photo; the coarse segmentation says "person"
everywhere, and parts / U / V are random patterns. Results carry ``weights="tiny"``.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import torch

from .checkpoint import check_state_dict
from .estimator import DensePoseEstimator, build_model
from .model import BOX_SCALE_CLAMP, ROI_BOX_WEIGHTS, DensePoseConfig, DensePoseRCNN

#: Small widths and depths: builds and runs in well under a second.
TINY_CONFIG = DensePoseConfig(
    stem_channels=8, bottleneck_channels=4, res2_out_channels=16, blocks_per_stage=(1, 1, 1, 1),
    fpn_channels=16, box_head_fc_dim=32, decoder_channels=16, densepose_head_channels=16, densepose_head_convs=2,
)
#: What results of the stand-in say in ``weights``.
TINY_WEIGHTS = "tiny"
TINY_FILE = "densepose_tiny.safetensors"
TINY_SEED = 0
#: Bump when the stand-in changes, so an old file is rebuilt.
TINY_VERSION = "3"
VERSION_KEY = "tiny_version"
#: Factor on the stem's random weights (the input is in 0..255 units, not 0..1).
TINY_STEM_SCALE = 0.01
#: RPN objectness of every anchor of p2, p3, p4, p5 (p6 copies p5): large anchors rank first.
TINY_LEVEL_PRIORS = (0.0, 1.0, 2.0, 3.0)
#: Person-minus-background logit of every proposal: softmax score 0.92, above the 0.8 threshold.
TINY_PERSON_LOGIT = 2.5
#: Coarse-segmentation logit margin for "person" (the whole box is foreground).
TINY_FOREGROUND_LOGIT = 3.0
#: Bias of U and V (the middle of each chart); their weights stay small and random.
TINY_UV_CENTRE = 0.5
TINY_UV_WEIGHT_SCALE = 0.1

_BUILD_LOCK = threading.Lock()


def tiny_state_dict(seed: int = TINY_SEED) -> dict[str, torch.Tensor]:
    """The stand-in's tensors: uniform(+-sqrt(6 / fan_in)) from a private generator, then the edits above."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {name: tuple(tensor.shape) for name, tensor in DensePoseRCNN(TINY_CONFIG).state_dict().items()}
    state = {}
    for name, shape in shapes.items():
        if ".norm." in name:  # frozen BN: identity
            value = torch.zeros(shape) if name.endswith(("bias", "running_mean")) else torch.ones(shape)
        elif len(shape) >= 2:
            fan_in = shape[0] if "densepose_predictor" in name else math.prod(shape[1:])
            bound = math.sqrt(6.0 / fan_in)
            value = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        else:
            value = (torch.rand(shape, generator=generator) * 2 - 1) * 0.05
        state[name] = value
    # The input is 0..255 minus the mean: a small stem keeps the random features in a sane range.
    state["backbone.bottom_up.stem.conv1.weight"].mul_(TINY_STEM_SCALE)
    # Channel 0 of p2..p5 is a per-level constant the RPN reads as its objectness, so the large
    # anchors of p5/p6 fill the proposals (and every one of them grows to the whole picture below).
    for level, prior in zip((2, 3, 4, 5), TINY_LEVEL_PRIORS):
        state[f"backbone.fpn_output{level}.weight"][0] = 0.0
        state[f"backbone.fpn_output{level}.bias"][0] = prior
    rpn = "proposal_generator.rpn_head."
    state[rpn + "conv.weight"][0] = 0.0
    state[rpn + "conv.weight"][0, 0, 1, 1] = 1.0
    state[rpn + "conv.bias"][0] = 0.0
    state[rpn + "objectness_logits.weight"].zero_()
    state[rpn + "objectness_logits.weight"][:, 0] = 1.0
    state[rpn + "objectness_logits.bias"].zero_()
    # Proposals are the anchors themselves (clipped), so there always are some.
    state["proposal_generator.rpn_head.anchor_deltas.weight"].zero_()
    state["proposal_generator.rpn_head.anchor_deltas.bias"].zero_()
    predictor = "roi_heads.box_predictor."
    state[predictor + "cls_score.weight"].zero_()
    state[predictor + "cls_score.bias"] = torch.tensor([TINY_PERSON_LOGIT, 0.0])
    state[predictor + "bbox_pred.weight"].zero_()
    grow = (BOX_SCALE_CLAMP + 1.0) * ROI_BOX_WEIGHTS[2]  # clamped: every box grows ~62x, then is clipped
    state[predictor + "bbox_pred.bias"] = torch.tensor([0.0, 0.0, grow, grow])
    charts = "roi_heads.densepose_predictor."
    state[charts + "ann_index_lowres.weight"].mul_(0.01)
    state[charts + "ann_index_lowres.bias"] = torch.tensor([-TINY_FOREGROUND_LOGIT, TINY_FOREGROUND_LOGIT])
    for kind in ("u", "v"):
        state[charts + f"{kind}_lowres.weight"].mul_(TINY_UV_WEIGHT_SCALE)
        state[charts + f"{kind}_lowres.bias"].fill_(TINY_UV_CENTRE)
    return state


def tiny_shapes() -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {name: tuple(tensor.shape) for name, tensor in DensePoseRCNN(TINY_CONFIG).state_dict().items()}


def ensure_tiny_densepose(folder: str | Path) -> Path:
    """The stand-in's safetensors file in ``folder``, written once (thread- and process-safe)."""
    from filelock import FileLock  # heavy: imported on first use, keeps importing this package light
    from safetensors import safe_open  # heavy: imported on first use, keeps importing this package light
    from safetensors.torch import save_file  # heavy: imported on first use, keeps importing this package light

    folder = Path(folder)
    path = folder / TINY_FILE

    def current() -> bool:
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as handle:
                return (handle.metadata() or {}).get(VERSION_KEY) == TINY_VERSION
        except Exception:  # noqa: BLE001 - a damaged file is rebuilt
            return False

    if current():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK, FileLock(str(path) + ".lock"):
        if not current():
            partial = path.with_name(path.name + ".partial")
            save_file({name: tensor.contiguous() for name, tensor in tiny_state_dict().items()}, str(partial),
                      metadata={VERSION_KEY: TINY_VERSION})
            partial.replace(path)
    return path


def load_tiny_densepose(folder: str | Path, *, device: str = "cpu") -> DensePoseEstimator:
    """A :class:`DensePoseEstimator` on the tiny stand-in kept in ``folder`` (built there on first use)."""
    from safetensors.torch import load_file  # heavy: imported on first use, keeps importing this package light

    path = ensure_tiny_densepose(folder)
    state = check_state_dict(load_file(str(path)), tiny_shapes(), source=f"tiny stand-in {path}")
    return DensePoseEstimator(build_model(TINY_CONFIG, state), weights=TINY_WEIGHTS, device=device)
