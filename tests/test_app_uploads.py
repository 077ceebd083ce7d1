"""Each upload is decoded once per session: the app keeps the decoded picture of each input in the user's
`gr.State` (parts2whole.ui.uploads.Uploads), so the preview, the automatic mask, every click, Generate and
the used-inputs strip reuse it. Counted by wrapping the loaders where the ui looks them up."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest

from app_fixtures import FAST_SIZE, FAST_STEPS, WEIGHTS_DIR, example_file, free_port
from test_app_preprocess import FakeStudio, flat_photo

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture
def decodes(monkeypatch) -> dict[str, Counter]:
    """Every decode by the ui, by file name: {"image": Counter, "mask": Counter}."""
    from parts2whole.ui import uploads

    counted = {"image": Counter(), "mask": Counter()}
    load_image, load_mask = uploads.load_image, uploads.load_mask

    def counting_image(path, **kwargs):
        counted["image"][Path(path).name] += 1
        return load_image(path, **kwargs)

    def counting_mask(path, *args, **kwargs):
        counted["mask"][Path(path).name] += 1
        return load_mask(path, *args, **kwargs)

    monkeypatch.setattr(uploads, "load_image", counting_image)
    monkeypatch.setattr(uploads, "load_mask", counting_mask)
    return counted


def test_upload_automatic_mask_two_clicks_and_generate_decode_each_file_once(tiny_studio, decodes, tmp_path):
    """The served app (in-process), through gradio_client: one session, each file decoded once."""
    from parts2whole import examples
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui import build_demo, queue

    service = PreprocessingService(tiny_studio, tiny_folder=WEIGHTS_DIR / "tiny-preprocess")
    library = examples.ExampleLibrary(cache_root=tmp_path / "examples")  # never fetched: the drawn examples
    demo = queue(build_demo(tiny_studio, service, library))
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = gradio_client.Client(demo.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
        shirt = gradio_client.handle_file(str(flat_photo("upper_body_clothes", tmp_path)))
        pose = gradio_client.handle_file(str(example_file("pose")))
        client.predict(shirt, api_name="/upper_body_clothes_mask_preview")  # the upload's change event,
        client.predict(shirt, api_name="/upper_body_clothes_uploaded")  # then its automatic mask
        client.predict(shirt, api_name="/upper_body_clothes_auto_mask")
        client.predict(shirt, "add", 128, 150, api_name="/upper_body_clothes_click")
        mask, *_ = client.predict(shirt, "remove", 128, 40, api_name="/upper_body_clothes_click")
        client.predict(pose, api_name="/pose_kind")
        _gallery, _bundle, status, _seed = client.predict(
            upper_body_clothes=shirt, upper_body_clothes_mask=gradio_client.handle_file(mask), pose=pose,
            prompt="a shirt", randomize_seed=False, seed=1, steps=FAST_STEPS, size=FAST_SIZE, api_name="/generate")
    finally:
        demo.close()
    assert "Done" in status
    assert decodes["image"] == Counter({"upper_body_clothes.jpg": 1, "pose.png": 1}), decodes
    assert sum(decodes["mask"].values()) == 1 and set(decodes["mask"].values()) == {1}, decodes  # Generate's mask


def test_clicks_on_the_preview_reuse_the_decoded_picture_and_mask(decodes, tmp_path):
    """In the browser a click arrives as a select event with the slot's picture and mask files."""
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui.slots import make_slot_handlers
    from parts2whole.ui.tools import make_tool_handlers
    from parts2whole.ui.uploads import Uploads

    service = PreprocessingService(FakeStudio(tiny=True), tiny_folder=WEIGHTS_DIR / "tiny-preprocess")
    on_change, *_ = make_slot_handlers("shoes")
    tools = make_tool_handlers("shoes", service)
    uploads = copy.deepcopy(Uploads())  # as gr.State makes each session's own
    shoes = str(flat_photo("shoes", tmp_path))
    on_change(shoes, uploads)
    mask, *_, state = tools["uploaded"](shoes, uploads)
    mask.save(tmp_path / "mask.png")
    for x, y in ((100, 120), (60, 80)):
        click = type("Select", (), {"index": [x, y]})()
        clicked, preview, *_, state = tools["select"](shoes, str(tmp_path / "mask.png"), "add", state, uploads, click)
        assert clicked is not None and preview["label"].startswith("Used area")
    assert decodes["image"] == Counter({"shoes.jpg": 1}) and decodes["mask"] == Counter({"mask.png": 1}), decodes

    other = tmp_path / "other"
    other.mkdir()
    tools["auto_mask"](str(flat_photo("face", other)), uploads)  # another picture in the slot replaces it
    tools["auto_mask"](shoes, uploads)
    assert decodes["image"] == Counter({"shoes.jpg": 2, "face.jpg": 1})
    assert copy.deepcopy(uploads)._entries == {}  # a new session starts empty, never shares the decoded files
