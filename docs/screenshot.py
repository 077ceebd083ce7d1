"""Make docs/screenshot.png: the app as people see it, filled from a photo example, before Generate.

The picture is made, not drawn. The script
1. writes the tests' stand-in of the training dataset (`tests/examples_standin.py`: the real layout, tiny
   synthetic "photos") unless `--dataset` names a local copy of the real one (a folder with test.jsonl and
   the zips);
2. starts `app.py --weights tiny` (offline), whose background fetch reads the photo examples from that copy
   (`P2W_EXAMPLES_SOURCE`), exactly as the app does from the Hub;
3. opens the page in Debian's Chromium through Playwright with the browser tests' set-up, clicks a photo
   example, waits until every part slot shows its dataset mask and the Pose slot its DensePose map, and
   takes the picture of the inputs (the part slots, the pose, the galleries): before Generate, so no noise
   output of the tiny model is shown;
4. keeps the PNG small (a 256-colour palette, scaled to `--width`).

    .venv/bin/python docs/screenshot.py                       # writes docs/screenshot.png
    .venv/bin/python docs/screenshot.py -o /tmp/shot.png      # anywhere else
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "screenshot.png"
#: The browser tests' Chromium set-up (tests/test_app_browser.py); test_docs_screenshot checks they agree.
CHROMIUM = os.environ.get("P2W_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
#: A desktop window; the picture is the page from its top to the end of the inputs.
VIEWPORT = {"width": 1400, "height": 1100}
#: The example clicked: the second card (a man, top and bottom, five parts: most slots filled).
EXAMPLE_INDEX = 1
START_TIMEOUT_S = 240
WAIT_TIMEOUT_S = 120
#: Stop the picture below the generate controls: the inputs, not the (noise) result area of the tiny model.
LAST_SHOWN_ELEMENT = "#pose-gallery"
MARGIN_PX = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Make the README's screenshot from the running app.")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="PNG to write")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="a local copy of the dataset (default: the tests' stand-in, written to a temporary folder)")
    parser.add_argument("--width", type=int, default=1100, help="width of the PNG in pixels")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(work: Path, dataset: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py --weights tiny` on a free port, offline, reading the photo examples from `dataset`."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="2",
               P2W_EXAMPLES_SOURCE=str(dataset), P2W_EXAMPLES_DIR=str(work / "examples-cache"))
    env.setdefault("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))
    log = open(work / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py"), "--weights", "tiny", "--port", str(port)],
                               cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with code {process.returncode}; see {work / 'app.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"app.py did not answer on {url} within {START_TIMEOUT_S} s")


def wait_for_text(locator, text: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if locator.count() and text in locator.first.inner_text():
            return
        time.sleep(0.25)
    raise SystemExit(f"the page never showed {text!r}")


def fill_and_shoot(url: str, raw_png: Path) -> None:
    """Open the page, click a photo example, wait for its masks and pose, take the picture of the inputs."""
    # Imported here: Playwright is a test dependency, needed only to make the picture.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, timeout=WAIT_TIMEOUT_S * 1000)
        wait_for_text(page.locator("#examples-note"), "Photo examples")
        cards = page.locator("#examples button.thumbnail-item")
        cards.nth(EXAMPLE_INDEX).wait_for(timeout=WAIT_TIMEOUT_S * 1000)
        cards.nth(EXAMPLE_INDEX).click()
        wait_for_text(page.locator("#pose-kind"), "DensePose")
        page.locator("#pose-image img").wait_for(timeout=WAIT_TIMEOUT_S * 1000)
        for slot in page.locator("[id$='-image'] img").all():
            slot.wait_for(timeout=WAIT_TIMEOUT_S * 1000)
        for preview in page.locator("[id$='-mask-preview'] [data-testid='block-label']").all():
            if preview.is_visible():
                wait_for_text(preview, "dataset mask")
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)  # the last thumbnails finish painting
        bottom = page.locator(LAST_SHOWN_ELEMENT).bounding_box()
        height = int(bottom["y"] + bottom["height"]) + MARGIN_PX if bottom else VIEWPORT["height"]
        page.screenshot(path=str(raw_png), full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
        browser.close()


def small_png(raw_png: Path, output: Path, width: int) -> None:
    """Scale to `width` and keep 256 colours: a UI picture stays sharp and well under 400 KB."""
    image = Image.open(raw_png).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(output, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"Chromium not found at {CHROMIUM} (install Debian's chromium package, or set P2W_CHROMIUM).")
    work = Path(tempfile.mkdtemp(prefix="parts2whole-screenshot-"))
    try:
        dataset = args.dataset
        if dataset is None:
            dataset = work / "standin"
            subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "examples_standin.py"), str(dataset)],
                           check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
        process, url = start_app(work, dataset)
        try:
            fill_and_shoot(url, work / "raw.png")
        finally:
            process.terminate()
            process.wait(timeout=30)
        small_png(work / "raw.png", args.output, args.width)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.output} ({args.output.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
