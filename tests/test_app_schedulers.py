"""The app's sampler choice: through `/generate` of the shared served app (tiny model), recorded in the
bundle and replayed from it by the CLI; unknown names as a message; the speed presets."""

from __future__ import annotations

import json
import shlex
import zipfile

import numpy as np
import pytest
from PIL import Image

from app_fixtures import FAST_SIZE, FAST_STEPS, WEIGHTS_DIR, example_file, shared_app_url

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return gradio_client.Client(shared_app_url(), verbose=False,
                                download_files=str(tmp_path_factory.mktemp("downloads")))


def test_sampler_is_recorded_in_the_bundle_and_the_cli_replays_it(client, tmp_path, monkeypatch):
    handle = gradio_client.handle_file
    gallery, bundle, status, seed = client.predict(
        face=handle(str(example_file("face"))), upper_body_clothes=handle(str(example_file("upper_body_clothes"))),
        pose=handle(str(example_file("pose"))), prompt="a man in a red shirt", seed=21, randomize_seed=False,
        steps=FAST_STEPS, size=FAST_SIZE, scheduler="dpmpp_2m", api_name="/generate")
    assert seed == 21 and "DPM-Solver++ 2M" in status
    folder = tmp_path / "bundle"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)
    parameters = json.loads((folder / "parameters.json").read_text())
    assert parameters["scheduler"] == "dpmpp_2m"
    command = next(line for line in (folder / "README.txt").read_text().splitlines() if line.startswith("python -m"))
    assert "--scheduler dpmpp_2m" in command

    from parts2whole.cli import main

    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))  # the served app's tiny model
    monkeypatch.chdir(folder)
    assert main(shlex.split(command)[3:] + ["--weights", "tiny", "-q"]) == 0
    assert json.loads((folder / "results" / "again.json").read_text())["scheduler"] == "dpmpp_2m"
    again = np.asarray(Image.open(folder / "results" / "again.png").convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(folder / "results" / "result_0.png").convert("RGB"), dtype=np.int16)
    assert np.abs(again - original).max() <= 1  # the same computation, up to 8-bit rounding


def test_unknown_sampler_is_a_message_not_a_traceback(client):
    with pytest.raises(Exception, match="Unknown scheduler 'heun'; choose one of") as error_info:
        client.predict(face=gradio_client.handle_file(str(example_file("face"))),
                       pose=gradio_client.handle_file(str(example_file("pose"))), randomize_seed=False,
                       steps=FAST_STEPS, size=FAST_SIZE, scheduler="heun", api_name="/generate")
    assert "Traceback" not in str(error_info.value)


def test_speed_presets_set_sampler_and_steps_and_follow_hand_changes():
    from parts2whole.ui import settings

    assert settings.preset_values(settings.PRESET_FAST, 30) == ("dpmpp_2m", 20)
    assert settings.preset_values(settings.PRESET_DEFAULT, 30) == ("ddim", 30)
    assert settings.matching_preset("dpmpp_2m", 20.0, 30) == settings.PRESET_FAST  # sliders send floats
    assert settings.matching_preset("ddim", 30, 30) == settings.PRESET_DEFAULT
    assert settings.matching_preset("dpmpp_2m", 25, 30) is None
    assert settings.matching_preset("unipc", 20, 30) is None


def test_fast_preset_in_chromium_sets_sampler_and_steps(tmp_path):
    """In the browser: the Fast preset fills Advanced settings; a hand-set step count leaves the preset."""
    from test_app_browser import CHROMIUM_ARGS, PAGE_LOAD_TIMEOUT_MS, _chromium_or_skip

    executable = _chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(shared_app_url(), timeout=PAGE_LOAD_TIMEOUT_MS)
            preset = page.locator("#speed-preset")
            preset.get_by_text("Fast", exact=False).click()
            page.locator("#advanced-settings").get_by_text("Advanced settings").first.click()
            steps = page.locator("#steps input[type='number']")
            sampler = page.locator("#scheduler input")
            sync_api.expect(steps).to_have_value("20", timeout=PAGE_LOAD_TIMEOUT_MS)
            sync_api.expect(sampler).to_have_value("DPM-Solver++ 2M", timeout=PAGE_LOAD_TIMEOUT_MS)
            assert preset.get_by_label("Fast", exact=False).is_checked()
            steps.fill("25")
            steps.press("Enter")
            sync_api.expect(preset.get_by_label("Fast", exact=False)).not_to_be_checked(timeout=PAGE_LOAD_TIMEOUT_MS)
            page.close()
        finally:
            browser.close()
