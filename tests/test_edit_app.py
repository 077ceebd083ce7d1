"""The app's edit mode on the tiny model: the `/edit` API endpoint keeps the photo outside the region at
the photo's size and its bundle replays the edit; in Chromium a person uploads a photo and a region,
refines the region with one click, changes one part and sees the edited photo."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app_fixtures import example_file, shared_app_url
from parts2whole.model.edit_region import DEFAULT_FEATHER, feathered_alpha
from test_app_browser import PAGE_LOAD_TIMEOUT_MS, _slot_file_input, browser  # noqa: F401 - the fixture

gradio_client = pytest.importorskip("gradio_client")

QUICK = dict(steps=2, size="192 × 128 · thumbnail", seed=5, randomize_seed=False)
EDIT_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A landscape photo stored as WebP under a .jpg name, and its region (a 3-channel JPEG-like mask)."""
    folder = tmp_path_factory.mktemp("edit-app")
    source = Image.fromarray(np.random.default_rng(4).integers(0, 256, (140, 210, 3), dtype=np.uint8))
    source.save(folder / "photo.jpg", format="WEBP", lossless=True)
    region = Image.new("RGB", source.size)
    ImageDraw.Draw(region).rectangle((80, 90, 125, 130), fill=(255, 255, 255))
    region.save(folder / "region.png")
    return folder / "photo.jpg", folder / "region.png"


def test_edit_endpoint_keeps_the_photo_outside_the_region(photo, tmp_path):
    client = gradio_client.Client(shared_app_url(), verbose=False, download_files=str(tmp_path))
    handle = gradio_client.handle_file
    source, region = photo
    gallery, bundle, status = client.predict(
        source=handle(str(source)), change=["shoes"], shoes=handle(str(example_file("face"))),
        face=handle(str(example_file("face"))),  # left in its slot from a portrait: not ticked, so not changed
        region=handle(str(region)), strength=1.0, api_name="/edit", **QUICK)
    assert "Edited" in status
    edited = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"), dtype=np.float32)
    original = np.asarray(Image.open(source).convert("RGB"), dtype=np.float32)
    assert edited.shape == original.shape
    outside = np.asarray(feathered_alpha(Image.open(region).convert("L"), DEFAULT_FEATHER)) == 0
    np.testing.assert_allclose(edited[outside], original[outside], atol=1.0)
    assert np.abs(edited[~outside] - original[~outside]).mean() > 5.0
    with zipfile.ZipFile(bundle) as archive:
        readme = archive.read("README.txt").decode()
        parameters = json.loads(archive.read("parameters.json"))
        assert {"inputs/source.png", "inputs/region.png", "inputs/pose.png", "inputs/shoes.png"} <= set(archive.namelist())
    assert "python -m parts2whole edit inputs/source.png --change shoes" in readme and "--seed 5" in readme
    assert parameters["mode"] == "edit" and parameters["change"] == ["shoes"] and parameters["seed"] == 5


def test_edit_endpoint_reports_a_missing_new_picture(photo):
    client = gradio_client.Client(shared_app_url(), verbose=False)
    with pytest.raises(Exception, match="has no new picture") as error_info:
        client.predict(source=gradio_client.handle_file(str(photo[0])), change=["shoes"], api_name="/edit", **QUICK)
    assert "Traceback" not in str(error_info.value)


def test_upload_a_photo_change_one_part_and_see_it_edited(browser, photo):  # noqa: F811 - the fixture
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(shared_app_url(), timeout=PAGE_LOAD_TIMEOUT_MS)
    page.get_by_text("Edit a photo: change one part, keep the rest").click()
    page.locator("#edit-source input[type='file']").set_input_files(str(photo[0]))
    page.locator("#edit-change").get_by_label("Shoes").check()
    _slot_file_input(page, "Shoes").set_input_files(str(example_file("face")))
    page.get_by_text("Region and strength").click()
    page.locator("#edit-region input[type='file']").set_input_files(str(photo[1]))
    page.locator("#edit-preview img").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)  # the region over the photo
    message = page.locator("#edit-region-message")
    message.get_by_text("your region").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    uploaded_region = page.locator("#edit-region img").get_attribute("src")
    shown = page.locator("#edit-preview img")  # drawn centred, scaled down only when it does not fit
    box, natural = shown.bounding_box(), shown.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    drawn = min(1.0, box["width"] / natural[0], box["height"] / natural[1])
    # One click ("+ add") at (42, 35) in the photo, away from the uploaded region, refines the region.
    shown.click(position={"x": box["width"] / 2 - natural[0] * drawn * 0.3,
                          "y": box["height"] / 2 - natural[1] * drawn * 0.25})
    message.get_by_text("added by a click").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    assert page.locator("#edit-region img").get_attribute("src") != uploaded_region  # what Edit will get
    page.locator("#edit-button").click()
    page.locator("#edit-status").get_by_text("Edited").wait_for(timeout=EDIT_TIMEOUT_MS)
    image = page.locator("#edit-gallery img").first
    image.wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    assert image.evaluate("img => img.complete && img.naturalWidth === 210 && img.naturalHeight === 140")
    assert "Traceback" not in page.content()
    page.close()


def test_edit_this_result_reuses_the_generations_references(tiny_studio, tmp_path, monkeypatch):
    """The UI handlers in process: Generate, *Edit this result*, Edit: only the new part is encoded."""
    from parts2whole.studio.preprocessing import PreprocessingService
    from parts2whole.ui.edit import first_result, make_edit
    from parts2whole.ui.generate import make_generate

    service, quiet = PreprocessingService(tiny_studio), (lambda *args, **kwargs: None)
    settings = dict(steps=1, size="192 × 128 · thumbnail", seed=1, randomize_seed=False, progress=quiet)
    gallery, bundle, *_ = make_generate(tiny_studio, service)(
        face=str(example_file("face")), upper_body_clothes=str(example_file("upper_body_clothes")),
        pose=str(example_file("pose")), **settings)
    gallery[0][0].save(tmp_path / "shown.png")  # what the browser's gallery holds: a PNG file
    source, state = first_result([(str(tmp_path / "shown.png"), "caption")], bundle)
    assert state is not None and set(state["inputs"].references) == {"face", "upper body clothes"}
    region = Image.new("L", (128, 192))
    ImageDraw.Draw(region).rectangle((30, 60, 100, 120), fill=255)
    region.save(tmp_path / "region.png")
    pipe = tiny_studio.pipeline()
    encoded, original = [], pipe.encode_checked
    monkeypatch.setattr(pipe, "encode_checked",
                        lambda references, *a, **k: encoded.append(references.labels) or original(references, *a, **k))
    edited, _bundle, status = make_edit(tiny_studio, service)(
        upper_body_clothes=str(example_file("face")), change=["upper_body_clothes"], source=source,
        region=str(tmp_path / "region.png"), edited_result=state, **settings)
    assert encoded == [("upper body clothes",)] and "Edited" in status
    assert edited[0][0].size == (128, 192)


def test_edit_endpoint_explains_bad_files(photo, tmp_path):
    client = gradio_client.Client(shared_app_url(), verbose=False)
    handle = gradio_client.handle_file
    (tmp_path / "broken.jpg").write_bytes(b"this is not a picture")
    Image.new("L", (50, 200), 255).save(tmp_path / "tall.png")  # a region made for another picture
    cases = [(dict(source=handle(str(tmp_path / "broken.jpg"))), "photo to edit"),
             (dict(source=handle(str(photo[0])), region=handle(str(tmp_path / "tall.png"))), "region")]
    for arguments, message in cases:
        with pytest.raises(Exception, match=message) as error_info:
            client.predict(change=["shoes"], shoes=handle(str(example_file("face"))), api_name="/edit",
                           **arguments, **QUICK)
        assert "Traceback" not in str(error_info.value)
