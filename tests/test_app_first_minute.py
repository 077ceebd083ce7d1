"""The first minute of a visit, on a freshly started app: parts are uploaded (each gets an automatic mask)
while the first Generate is still loading the model. Loading must not break the preprocessing models
that other requests build meanwhile (it once left them with meta tensors: "Cannot copy out of meta tensor")."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app_fixtures import FAST_SIZE, FAST_STEPS, example_file, running_app

gradio_client = pytest.importorskip("gradio_client")

#: Opaque photos (no transparency), so every upload asks the parser for an automatic mask.
UPLOADED = ("face", "upper_body_clothes", "lower_body_clothes")
TIMEOUT_S = 300


def _value(update):
    return update.get("value") if isinstance(update, dict) and "__type__" in update else update


def _photo(stem: str, folder) -> str:
    part = Image.open(example_file(stem)).convert("RGBA")
    photo = Image.new("RGB", part.size, (238, 236, 230))
    photo.paste(part, (0, 0), part)
    path = folder / f"{stem}.jpg"
    photo.save(path, quality=95)
    return str(path)


def test_parts_uploaded_while_the_first_generate_loads_the_model_all_get_masks(tmp_path):
    log_path = tmp_path / "app.log"
    with running_app(log_path=log_path) as url:
        client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        handle = gradio_client.handle_file
        photos = {stem: _photo(stem, tmp_path) for stem in UPLOADED}
        generation = client.submit(face=handle(photos["face"]), pose=handle(str(example_file("pose"))),
                                   prompt="a person", randomize_seed=False, seed=3, steps=FAST_STEPS, size=FAST_SIZE,
                                   api_name="/generate")
        uploads = {stem: client.submit(handle(path), api_name=f"/{stem}_uploaded") for stem, path in photos.items()}
        for stem, job in uploads.items():
            mask, _preview, _editor, _mode, message = job.result(timeout=TIMEOUT_S)
            assert mask is not None, (stem, _value(message))
            pixels = np.asarray(Image.open(_value(mask)).convert("L"))
            assert pixels.shape == Image.open(photos[stem]).size[::-1] and pixels.max() == 255, stem
        gallery, _bundle, status, seed = generation.result(timeout=TIMEOUT_S)
        assert gallery and seed == 3 and "Done" in status, status
    log = log_path.read_text()
    assert "failed" not in log and "meta tensor" not in log, log[-3000:]
