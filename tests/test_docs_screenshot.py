"""The README's screenshot is made by docs/screenshot.py from the running app; the script must keep working.

It runs here as written (to a temporary path): the stand-in dataset, `app.py --weights tiny`, Chromium
filling the page from a photo example, a small PNG. A change to the page that breaks it fails here, so the
picture cannot silently go stale: rerun `.venv/bin/python docs/screenshot.py` when the page changes.
"""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from app_fixtures import REPO_ROOT, app_env
from test_app_browser import CHROMIUM_ARGS, _chromium_or_skip

SCRIPT = REPO_ROOT / "docs" / "screenshot.py"
MAX_BYTES = 400 * 1024
TIMEOUT_S = 600


def test_the_screenshot_script_uses_the_browser_tests_set_up():
    source = SCRIPT.read_text()
    assert all(f'"{argument}"' in source for argument in CHROMIUM_ARGS)
    assert "docs/screenshot.png" in (REPO_ROOT / "README.md").read_text()


def test_the_screenshot_script_makes_a_small_picture_of_the_filled_app(tmp_path):
    _chromium_or_skip()
    output = tmp_path / "shot.png"
    completed = subprocess.run([sys.executable, str(SCRIPT), "-o", str(output), "--width", "800"], cwd=REPO_ROOT,
                               env=app_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert completed.returncode == 0, completed.stdout[-500:] + completed.stderr[-2000:]
    assert 0 < output.stat().st_size < MAX_BYTES
    picture = Image.open(output)
    assert picture.format == "PNG" and picture.width == 800 and picture.height > 400
    committed = Image.open(REPO_ROOT / "docs" / "screenshot.png")
    assert (REPO_ROOT / "docs" / "screenshot.png").stat().st_size < MAX_BYTES and committed.width >= 800
