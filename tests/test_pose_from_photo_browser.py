"""In Debian's Chromium: the Pose slot makes a DensePose map from a photo (the tiny app reads DensePose, like
the released model), the preview shows it over the photo, and a generation uses it: the bundle says so.
Shares the served app and the browser set-up of test_app_browser.py."""

from __future__ import annotations

import json
import zipfile

from app_fixtures import example_file
from test_app_browser import download_bundle, GENERATION_TIMEOUT_MS, PAGE_LOAD_TIMEOUT_MS, app_url, browser  # noqa: F401 - fixtures
from test_pose_from_photo import person_photo


def test_pose_slot_makes_a_densepose_map_from_a_photo_and_generate_uses_it(browser, app_url, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page_errors = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(app_url, timeout=PAGE_LOAD_TIMEOUT_MS)
    page.get_by_label("Face", exact=True).set_input_files(str(example_file("face")))
    with page.expect_file_chooser() as chooser:
        page.locator("#pose-from-photo").click()
    chooser.value.set_files(str(person_photo(tmp_path)))
    kind = page.locator("#pose-kind")
    kind.get_by_text("made from your photo with DensePose").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    assert "DensePose map" in kind.inner_text() and "trained on" in kind.inner_text()
    preview = page.locator("#pose-preview")
    preview.locator("img").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    assert "Detected pose (DensePose)" in preview.inner_text()
    assert page.locator("#pose-image img").count() == 1  # the map is in the slot

    page.locator("#face-mask-preview img").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    page.get_by_role("button", name="Generate").click()
    page.locator("#run-status").get_by_text("Done").wait_for(timeout=GENERATION_TIMEOUT_MS)
    with zipfile.ZipFile(download_bundle(page, tmp_path)) as archive:
        parameters = json.loads(archive.read("parameters.json"))
    assert parameters["pose_source"] == "DensePose from a photo" and parameters["structure_kind"] == "densepose"
    made = parameters["pose_map"]
    assert made["from_photo"] is True and made["kind"] == "densepose" and len(made["box"]) == 4
    assert made["people_found"] >= 1 and made["weights"] == "tiny"
    page.screenshot(path=str(tmp_path / "pose-from-photo.png"), full_page=True)
    assert not page_errors, page_errors
    page.close()
