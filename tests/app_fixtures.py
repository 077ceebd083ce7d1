"""Helpers for the app tests: start `app.py` on a free port with the tiny model, find example inputs.

The app runs as a separate process, exactly as `make run` starts it, so the tests see what people see.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO_ROOT / "assets" / "examples" / "red-shirt-and-jeans"
#: The tiny checkpoint is built once into the repo's weights/ folder (git-ignored) and reused.
WEIGHTS_DIR = REPO_ROOT / "weights"
SERVER_START_TIMEOUT_S = 180
#: The fastest size preset (and few steps) keep a tiny-model generation to seconds on two CPU cores.
FAST_SIZE = "192 × 128 · thumbnail"
FAST_STEPS = 3


def example_file(stem: str) -> Path:
    return EXAMPLE_DIR / f"{stem}.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(**extra: str) -> dict[str, str]:
    """Environment of a test app: offline Hub, no analytics, CPU threads kept small (shared machine)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", P2W_WEIGHTS_DIR=str(WEIGHTS_DIR),
               OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env.pop("GRADIO_SERVER_NAME", None)
    env.pop("GRADIO_SERVER_PORT", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def running_app(*args: str, log_path: Path | None = None, **env: str):
    """Yield the URL of `python app.py --weights tiny --port N ...` (extra environment in `env`); stop it afterwards."""
    port = free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "app.py"), "--weights", "tiny", "--port", str(port),
                                *args], cwd=REPO_ROOT, env=app_env(**env), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with code {process.returncode} (log: {log_path})")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer on {url} within {SERVER_START_TIMEOUT_S} s (log: {log_path})")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if log_path:
            log.close()


_SHARED_APP: dict[str, str] = {}


def shared_app_url() -> str:
    """One served app for every test module of a session (starting one costs ~15 s on two cores)."""
    if "url" not in _SHARED_APP:
        log_path = Path(tempfile.mkdtemp(prefix="parts2whole-test-app-")) / "app.log"
        context = running_app(log_path=log_path)
        _SHARED_APP["url"] = context.__enter__()
        _SHARED_APP["log"] = str(log_path)
        atexit.register(context.__exit__, None, None, None)
    return _SHARED_APP["url"]
