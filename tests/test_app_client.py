"""The app's API through `gradio_client` (a served app on the tiny model), and its slot handlers in-process."""

from __future__ import annotations

import json
import zipfile

import pytest
from PIL import Image

from app_fixtures import FAST_SIZE, FAST_STEPS, example_file, shared_app_url

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return gradio_client.Client(shared_app_url(), verbose=False,
                                download_files=str(tmp_path_factory.mktemp("downloads")))


def test_generate_endpoint_returns_images_and_a_reproducible_bundle(client):
    handle = gradio_client.handle_file
    gallery, bundle, status, seed = client.predict(
        face=handle(str(example_file("face"))),
        upper_body_clothes=handle(str(example_file("upper_body_clothes"))),
        upper_body_clothes_mask=handle(str(example_file("upper_body_clothes"))),
        pose=handle(str(example_file("pose"))),
        prompt="a man in a red shirt", seed=11, randomize_seed=False, steps=FAST_STEPS, size=FAST_SIZE,
        num_images=2, api_name="/generate")
    assert seed == 11 and "Done" in status
    assert len(gallery) == 2
    image = Image.open(gallery[0]["image"])
    assert image.size == (128, 192)  # width x height of the 192 x 128 preset
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        parameters = json.loads(archive.read("parameters.json"))
    assert {"inputs/face.png", "inputs/upper_body_clothes.png", "inputs/pose.png", "masks/face.png",
            "masks/upper_body_clothes.png", "results/result_0.png", "results/result_1.png", "parameters.json",
            "README.txt"} <= names
    assert parameters["seed"] == 11 and parameters["steps"] == FAST_STEPS and parameters["num_images"] == 2
    assert parameters["parts"] == ["face", "upper body clothes"]
    assert parameters["mask_sources"]["upper body clothes"] == "given"


def test_generate_endpoint_reports_input_errors_as_messages(client):
    with pytest.raises(Exception, match="at least one reference") as error_info:
        client.predict(pose=gradio_client.handle_file(str(example_file("pose"))), randomize_seed=False,
                       steps=FAST_STEPS, size=FAST_SIZE, api_name="/generate")
    assert "Traceback" not in str(error_info.value)


def test_mask_preview_endpoint_shows_the_mask_in_use(client):
    mask, preview, _editor = client.predict(gradio_client.handle_file(str(example_file("face"))),
                                            api_name="/face_mask_preview")
    assert mask is None  # no explicit mask: the picture's transparency is used
    preview_path = preview["value"] if isinstance(preview, dict) else preview  # an update: value and label
    assert Image.open(preview_path).size == Image.open(example_file("face")).size


# ---------------------------------------------------------------------------------------- in-process handlers


def test_uploaded_mask_replaces_the_default_and_painting_adds_or_removes(tmp_path):
    from parts2whole.ui.masks import BRUSH_ADDS, BRUSH_REMOVES
    from parts2whole.ui.slots import make_slot_handlers

    on_change, on_upload, on_painted, _ = make_slot_handlers("face")
    face = str(example_file("face"))
    mask, preview, editor = on_change(face)
    assert mask is None and "transparency" in preview["label"]

    half = Image.new("L", (256, 256), 0)
    half.paste(255, (0, 0, 256, 128))
    half_path = tmp_path / "half.png"
    half.save(half_path)
    mask, preview, editor = on_upload(str(half_path), face)
    assert mask.getextrema() == (0, 255) and "uploaded" in preview["label"] and "50%" in preview["label"]
    mask.save(tmp_path / "mask.png")

    stroke = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    stroke.paste((255, 45, 149, 140), (0, 128, 256, 256))
    added, preview, _ = on_painted({"background": editor["background"], "layers": [stroke], "composite": None},
                                   face, str(tmp_path / "mask.png"), BRUSH_ADDS)
    assert added.getextrema() == (255, 255) and "100%" in preview["label"]
    removed, preview, _ = on_painted({"background": editor["background"], "layers": [stroke], "composite": None},
                                     face, str(tmp_path / "mask.png"), BRUSH_REMOVES)
    assert removed.getbbox() == (0, 0, 256, 128)


def test_examples_fill_every_slot_and_the_prompt():
    from parts2whole.ui.galleries import load_examples, make_example_loader

    examples = load_examples()
    assert len(examples) >= 3
    loader = make_example_loader(examples)
    values = loader(None, type("Select", (), {"index": 0})())
    assert len(values) == 6 + 3 and values[-3].endswith("pose.png") and values[-2]
    assert values[-1]["visible"] is False  # a drawn example has no real photo to show
