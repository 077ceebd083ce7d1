"""Tiny models in the real formats, shared by the preprocessing tests.

They live in :mod:`preprocess.tiny` (the app builds its offline stand-ins from the same code); this
module keeps the names the tests import. Not a pytest conftest (its name keeps it from being collected).
"""

from __future__ import annotations

from preprocess.tiny import (  # noqa: F401 - re-exported for the tests
    BOX_CELLS,
    FACE_CLASS,
    PERSON_BRIGHTNESS_THRESHOLD,
    SHARPNESS,
    TINY_IMAGE_SIZE,
    TinySimccPose,
    TinyYoloxDetector,
    build_tiny_sam,
    export_onnx,
    export_tiny_dwpose,
    person_photo,
    save_tiny_parser,
    tiny_segformer,
)
