"""The photo examples in Debian's Chromium: an app whose examples cache was filled from the local stand-in
dataset (tests/examples_standin.py) by the real fetch code. The gallery shows the fetched examples with the
real photo; clicking one fills the slots with the dataset's masks; clicking a pose fills the Pose slot; the
bundle of a generation says which dataset sample the pose came from.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from app_fixtures import running_app
from examples_standin import CountingFileSystem, standin_root
from parts2whole import examples
from test_app_browser import download_bundle, CHROMIUM_ARGS, GENERATION_TIMEOUT_MS, PAGE_LOAD_TIMEOUT_MS, _chromium_or_skip


def _app_with_examples(cache_root: Path, log_path: Path, **env: str):
    return running_app(log_path=log_path, P2W_EXAMPLES_DIR=str(cache_root), **env)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    root = standin_root()[0]
    cache_root = tmp_path_factory.mktemp("examples-cache")
    manifest = examples.fetch_examples(CountingFileSystem(), str(root), cache_root=cache_root)
    return cache_root, manifest


@pytest.fixture(scope="module")
def app_url(fetched, tmp_path_factory):
    cache_root, _ = fetched
    with _app_with_examples(cache_root, tmp_path_factory.mktemp("app") / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    executable = _chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _wait_text(locator, text: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if locator.count() and text in locator.first.inner_text():
            return locator.first.inner_text()
        time.sleep(0.25)
    raise AssertionError(f"{text!r} not shown; got {locator.first.inner_text() if locator.count() else None!r}")


def test_gallery_shows_the_fetched_examples_and_fills_slots_and_masks(browser, app_url, fetched):
    _, manifest = fetched
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(app_url, timeout=PAGE_LOAD_TIMEOUT_MS)
    thumbnails = page.locator("#examples button.thumbnail-item")
    thumbnails.first.wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    assert thumbnails.count() == len(manifest.examples) == 8
    assert "Photo examples" in page.locator("#examples-note").inner_text()
    assert "real photo first" in page.locator("#examples").inner_text()
    assert page.locator("#pose-gallery button.thumbnail-item").count() == len(manifest.poses) == 24

    example = manifest.examples[1]
    thumbnails.nth(1).click()
    for label in example.parts:  # every part the sample has, with the dataset's own mask
        key = label.replace(" ", "_")
        page.locator(f"#{key}-image img").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
        _wait_text(page.locator(f"#{key}-mask-preview [data-testid='block-label']"), "dataset mask")
    missing = [label for label in ("whole body clothes", "shoes", "hair or headwear") if label not in example.parts]
    for label in missing:
        assert page.locator(f"#{label.replace(' ', '_')}-image img").count() == 0
    assert page.locator("#prompt textarea").input_value() == example.prompt
    truth = page.locator("#example-ground-truth")
    truth.locator("img").wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    assert "ground truth, not generated" in truth.inner_text()
    _wait_text(page.locator("#pose-kind"), example.sample_id)  # the example's pose: its target's DensePose map
    assert not errors, errors
    page.close()


def test_pose_gallery_fills_the_pose_slot_and_the_bundle_says_where_it_came_from(browser, app_url, fetched, tmp_path):
    _, manifest = fetched
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.goto(app_url, timeout=PAGE_LOAD_TIMEOUT_MS)
    page.locator("#examples button.thumbnail-item").first.wait_for(timeout=PAGE_LOAD_TIMEOUT_MS)
    page.locator("#examples button.thumbnail-item").first.click()
    _wait_text(page.locator("#face-mask-preview [data-testid='block-label']"), "dataset mask")
    pose = manifest.poses[4]
    page.locator("#pose-gallery button.thumbnail-item").nth(4).click()
    note = _wait_text(page.locator("#pose-kind"), pose.sample_id)
    assert "DensePose map" in note and "released model reads" in note
    assert page.locator("#pose-image img").count() == 1

    page.get_by_role("button", name="Generate").click()
    page.locator("#run-status").get_by_text("Done").wait_for(timeout=GENERATION_TIMEOUT_MS)
    with zipfile.ZipFile(download_bundle(page, tmp_path)) as archive:
        parameters = json.loads(archive.read("parameters.json"))
    assert parameters["dataset_sources"]["pose"]["sample"] == pose.sample_id
    assert pose.sample_id in parameters["pose_source"] and examples.DATASET_ID in parameters["pose_source"]
    assert parameters["dataset_sources"]["face"]["sample"] == manifest.examples[0].sample_id
    assert parameters["mask_sources"]["face"] == "given"  # the dataset's mask went in with the face
    page.close()


def test_a_fetch_at_start_swaps_the_photo_examples_in(browser, tmp_path):
    """Empty cache, a local copy of the dataset (P2W_EXAMPLES_SOURCE): the app starts without waiting for the
    fetch, which runs in the background, and the page then shows the photo examples and their poses."""
    root = standin_root()[0]  # read only
    cache_root = tmp_path / "cache"
    log_path = tmp_path / "app.log"
    with _app_with_examples(cache_root, log_path, P2W_EXAMPLES_SOURCE=str(root)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, timeout=PAGE_LOAD_TIMEOUT_MS)
        _wait_text(page.locator("#examples-note"), "Photo examples: 8 test samples")
        assert page.locator("#examples button.thumbnail-item").count() == 8
        assert page.locator("#pose-gallery button.thumbnail-item").count() == 24
        assert "real photo first" in page.locator("#examples").inner_text()
        page.close()
    assert examples.load_manifest(examples.cache_folder(root=cache_root)) is not None
    assert "Photo examples ready: 8 examples, 24 poses" in log_path.read_text()
