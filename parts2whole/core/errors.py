"""The project's own error types, so the UI, the CLI and the API can tell bad input from bugs."""


class Parts2WholeInputError(ValueError):
    """Input a user can fix (a missing part, an empty mask, an odd size). The message says how."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as it is (missing, unexpected or mis-shaped tensors, unsafe files)."""


class GenerationOutOfMemory(Parts2WholeInputError):
    """The device (GPU) or the computer ran out of memory; a smaller size or fewer parts/images fits."""


class GenerationCancelled(Exception):
    """The person stopped the generation (or left): the work was abandoned and the model is free again."""
