"""What a generation hands back as files: PNG bytes and the parameters JSON."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from PIL import Image


def parameters_json(parameters: Mapping[str, Any]) -> str:
    return json.dumps(dict(parameters), indent=2, sort_keys=False) + "\n"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
