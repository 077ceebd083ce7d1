"""DensePose maps from photos: detectron2's ``densepose_rcnn_R_50_FPN_s1x`` in plain torch + torchvision.

* :mod:`.model` - the network (ResNet-50 + FPN, RPN, box head, DensePose decoder / head / predictor).
* :mod:`.checkpoint` - safe reading of the model-zoo pickle and the strict name / shape check.
* :mod:`.estimator` - photo -> :class:`DensePoseResult` (the training data's IUV encoding), loading.
* :mod:`.tiny` - the tiny random stand-in (same code, small channels).

Typical use::

    from preprocess.densepose import densepose_map
    result = densepose_map("photo.jpg")      # downloads the pinned checkpoint on first use
    result.map.save("densepose.png"); print(result.box, result.score, result.note)
"""

from .checkpoint import ArrayUnpickler, check_state_dict, expected_shapes, read_checkpoint, restricted_load
from .estimator import (
    DENSEPOSE_FILENAME,
    DENSEPOSE_REPO_ID,
    DENSEPOSE_REVISION,
    NO_PERSON_MESSAGE,
    DensePoseEstimator,
    DensePoseResult,
    NoPersonFound,
    densepose_map,
    get_densepose_estimator,
    load_densepose,
)
from .model import DEFAULT_SCORE_THRESHOLD, DensePoseConfig, DensePoseRCNN
from .tiny import TINY_WEIGHTS, load_tiny_densepose

__all__ = [
    "ArrayUnpickler", "DEFAULT_SCORE_THRESHOLD", "DENSEPOSE_FILENAME", "DENSEPOSE_REPO_ID", "DENSEPOSE_REVISION",
    "DensePoseConfig", "DensePoseEstimator", "DensePoseRCNN", "DensePoseResult", "NO_PERSON_MESSAGE", "NoPersonFound",
    "TINY_WEIGHTS", "check_state_dict", "densepose_map", "expected_shapes", "get_densepose_estimator",
    "load_densepose", "load_tiny_densepose", "read_checkpoint", "restricted_load",
]
