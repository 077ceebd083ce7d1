"""Preprocessing in Debian's Chromium: upload a photo, see the automatic mask, click on the picture and
watch the mask overlay change; make a pose map from a photo. Shares the served app and the browser set-up
of test_app_browser.py (and, like it, fails instead of skipping in CI when Chromium is missing)."""

from __future__ import annotations

import time

from app_fixtures import example_file
from test_app_browser import PAGE_LOAD_TIMEOUT_MS, _slot_file_input, app_url, browser  # noqa: F401 - fixtures
from test_app_preprocess import flat_photo
from test_pose_from_photo import person_photo

CHANGE_TIMEOUT_S = 60


def _wait_for_new_src(image, old_src: str | None) -> str:
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while time.monotonic() < deadline:
        src = image.get_attribute("src") if image.count() else None
        if src and src != old_src:
            return src
        time.sleep(0.2)
    raise AssertionError("the mask overlay did not change")


def test_clicks_on_the_picture_change_the_mask_overlay(browser, app_url, tmp_path):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page_errors = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(app_url, timeout=PAGE_LOAD_TIMEOUT_MS)
    assert "tiny random models" in page.locator("#tiny-model-banner").inner_text()

    _slot_file_input(page, "Upper-body clothes").set_input_files(str(flat_photo("upper_body_clothes", tmp_path)))
    preview = page.locator("#upper_body_clothes-mask-preview")
    label = preview.locator("[data-testid='block-label']")
    message = page.locator("#upper_body_clothes-mask-message")
    message.get_by_text("click", exact=False).wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)  # the automatic mask is in
    assert "Used area" in label.inner_text()
    overlay = preview.locator("img")
    automatic = overlay.get_attribute("src")

    box = overlay.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.55)  # "+ add" is the default
    added = _wait_for_new_src(overlay, automatic)
    label.get_by_text("clicks").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)

    page.locator("#upper_body_clothes-click-mode").get_by_text("remove").click()
    box = overlay.bounding_box()  # the label above the picture may have changed height
    page.mouse.click(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.9)
    _wait_for_new_src(overlay, added)

    with page.expect_file_chooser() as chooser:
        page.locator("#pose-from-photo").click()
    chooser.value.set_files(str(person_photo(tmp_path)))
    page.locator("#pose-preview img").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    # The tiny app reads DensePose maps, like the released model: the photo becomes one.
    page.locator("#pose-kind").get_by_text("DensePose map").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    page.screenshot(path=str(tmp_path / "preprocessing.png"), full_page=True)
    assert not page_errors, page_errors
    page.close()
