"""Background removal for reference photos with ``rembg`` and a human-segmentation model.

Default model: rembg's ``u2net_human_seg`` (U^2-Net trained on people; input 1x3x320x320, seven
1x1x320x320 side outputs, the first is the mask). rembg downloads it on first use from its GitHub
release into ``$REMBG_HOME/models/u2net_human_seg/`` (``~/.rembg`` by default; set
``REMBG_HOME=weights/rembg`` to keep it beside the other weights). Any other rembg model name works,
and ``model_path`` runs your own U^2-Net-style ONNX file through rembg's ``u2net_custom`` session
(rembg only accepts custom files inside ``$REMBG_HOME``).

The session is created once, lazily, under a lock; onnxruntime sessions are safe to run from
several threads. The subject mask is rembg's soft mask (0..255, not thresholded) so hair edges
stay soft. An input that already has transparency keeps it: its alpha is multiplied with the
predicted mask, so nothing that was cut out comes back.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from parts2whole.core.errors import CheckpointError

from .images import ImageSource, load_image

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

#: rembg model used when none is named: U^2-Net trained for human segmentation.
DEFAULT_BACKGROUND_MODEL = "u2net_human_seg"
#: rembg session name for a user-supplied U^2-Net-style ONNX file.
CUSTOM_MODEL_SESSION = "u2net_custom"


class BackgroundRemover:
    """One rembg session, created on first use. ``model_path`` selects a custom ONNX file."""

    def __init__(self, model_name: str = DEFAULT_BACKGROUND_MODEL, *, model_path: str | Path | None = None) -> None:
        self.model_name = CUSTOM_MODEL_SESSION if model_path is not None else model_name
        self.model_path = None if model_path is None else Path(model_path)
        self._session: BaseSession | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> BaseSession:
        with self._lock:
            if self._session is None:
                self._session = self._create_session()
            return self._session

    def _create_session(self) -> BaseSession:
        from rembg import new_session  # optional dependency, loaded on first use

        try:
            if self.model_path is not None:
                return new_session(CUSTOM_MODEL_SESSION, model_path=str(self.model_path))
            return new_session(self.model_name)
        except ValueError as error:
            raise CheckpointError(
                f"rembg cannot use model {self.model_path or self.model_name!r}: {error}. "
                "A custom ONNX file must lie inside rembg's model folder ($REMBG_HOME, default ~/.rembg)."
            ) from error
        except Exception as error:  # noqa: BLE001 - download or ONNX load failure
            raise CheckpointError(
                f"Could not load the background-removal model {self.model_name!r} "
                f"({type(error).__name__}: {error}). Check the network for the first download, "
                f"or put the ONNX file under {os.environ.get('REMBG_HOME', '~/.rembg')}/models/."
            ) from error

    def subject_mask(self, image: ImageSource) -> Image.Image:
        """Soft subject mask (``L``, image size, 255 = subject)."""
        loaded = load_image(image, what="photo")
        predicted = self.session.predict(loaded.convert("RGB"))[0].convert("L")
        if predicted.size != loaded.size:
            predicted = predicted.resize(loaded.size, Image.Resampling.BILINEAR)
        if loaded.mode == "RGBA":
            existing = np.asarray(loaded.getchannel("A"), dtype=np.uint16)
            combined = (np.asarray(predicted, dtype=np.uint16) * existing + 127) // 255
            predicted = Image.fromarray(combined.astype(np.uint8))
        return predicted

    def remove_background(self, image: ImageSource) -> Image.Image:
        """``RGBA`` copy of ``image`` whose alpha is the subject mask."""
        loaded = load_image(image, what="photo")
        cutout = loaded.convert("RGBA")
        cutout.putalpha(self.subject_mask(loaded))
        return cutout


_default_remover: BackgroundRemover | None = None
_default_lock = threading.Lock()


def get_background_remover() -> BackgroundRemover:
    """The process-wide remover with the default human-segmentation model."""
    global _default_remover
    with _default_lock:
        if _default_remover is None:
            _default_remover = BackgroundRemover()
        return _default_remover


def remove_background(image: ImageSource, remover: BackgroundRemover | None = None) -> Image.Image:
    """``RGBA`` image whose alpha is the person/subject mask (default model: ``u2net_human_seg``)."""
    return (remover or get_background_remover()).remove_background(image)
