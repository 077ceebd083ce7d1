"""parts2whole: customized full-body portraits from part references (Parts2Whole on diffusers)."""

from .errors import CheckpointError, Parts2WholeInputError
from .labels import MAX_REFERENCES, PART_LABELS, canonical_label
from .pipeline import Parts2WholePipeline, Parts2WholePipelineOutput, ReferenceEncoding

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
