"""parts2whole: customized full-body portraits from part references (Parts2Whole on diffusers).

The pipeline (torch, diffusers, transformers) is imported on first use, so light modules such as
`parts2whole.core.errors` and `parts2whole.core.labels` stay cheap to import (preprocess/ and the CLI's --help use them).
"""

from importlib import import_module

from .core.errors import CheckpointError, Parts2WholeInputError
from .core.labels import MAX_REFERENCES, PART_LABELS, canonical_label

_LAZY = {"Parts2WholePipeline": ".model.pipeline", "Parts2WholePipelineOutput": ".model.pipeline", "ReferenceEncoding": ".model.pipeline"}

__all__ = [
    "CheckpointError",
    "MAX_REFERENCES",
    "PART_LABELS",
    "Parts2WholeInputError",
    "Parts2WholePipeline",
    "Parts2WholePipelineOutput",
    "ReferenceEncoding",
    "canonical_label",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
