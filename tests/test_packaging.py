"""What `pip install .` ships and where an installed copy keeps its files.

- A built wheel holds every module and data file of `parts2whole/` and `preprocess/` (package discovery).
- The weights folder in its three places: a checkout (`make` and `app.py` name the checkout's weights/),
  an installed copy run from elsewhere (the user cache; nothing written inside the environment), Docker
  (`P2W_WEIGHTS_DIR=/data/weights` beside `HF_HOME=/data/huggingface`).

The fresh environment reuses this one's packages (`--system-site-packages` cannot reach a venv's own, so a
`.pth` line names them) and installs with `--no-deps --no-build-isolation`: nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = ("parts2whole", "preprocess")
PACKAGE_DATA_SUFFIXES = (".py", ".json")


def shipped_files() -> set[str]:
    files = set()
    for root in PACKAGE_ROOTS:
        for path in (REPO_ROOT / root).rglob("*"):
            if path.suffix in PACKAGE_DATA_SUFFIXES and "__pycache__" not in path.parts:
                files.add(path.relative_to(REPO_ROOT).as_posix())
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(REPO_ROOT)], check=True, cwd=out, timeout=600)
    return next(out.glob("parts2whole-*.whl"))


def test_the_wheel_holds_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(shipped_files() - names)
    assert not missing, f"modules or data files missing from the wheel: {missing}"
    assert "parts2whole/train/trainer.py" in names and "preprocess/densepose/checkpoint_shapes.json" in names


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> dict:
    """A fresh venv with the wheel installed, this environment's packages visible, run from another folder."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # This environment's packages (torch, diffusers, ...) without its editable hook for the checkout.
    (site / "zz_outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(wheel)],
                   check=True, timeout=600)
    home = root / "home"
    env = {key: value for key, value in os.environ.items()
           if key not in ("P2W_WEIGHTS_DIR", "PARTS2WHOLE_WEIGHTS_DIR", "XDG_CACHE_HOME", "PYTHONPATH", "P2W_WEIGHTS")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"))
    work = root / "work"
    work.mkdir()
    return {"python": python, "venv": venv, "home": home, "env": env, "work": work}


def _files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts}


def _run(installed: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["python"]), *args], cwd=installed["work"], env=installed["env"],
                          capture_output=True, text=True, timeout=600)


def test_the_installed_copy_runs_from_elsewhere_and_defaults_to_the_user_cache(installed):
    shown = _run(installed, "-c", "import parts2whole, preprocess; from parts2whole.core.weights import weights_dir; "
                                  "print(parts2whole.__file__); print(preprocess.__file__); print(weights_dir())")
    assert shown.returncode == 0, shown.stderr
    package, preprocess_file, folder = shown.stdout.split()
    assert Path(package).is_relative_to(installed["venv"]) and Path(preprocess_file).is_relative_to(installed["venv"])
    assert Path(folder) == installed["home"] / ".cache" / "parts2whole"


def test_offline_preprocessing_writes_nothing_inside_the_environment(installed):
    photo = installed["work"] / "photo.jpg"
    Image.new("RGB", (96, 144), (180, 120, 90)).save(photo)
    before = _files_under(installed["venv"])
    missing = _run(installed, "-m", "parts2whole", "pose", str(photo), "-o", "map.png")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    cache = installed["home"] / ".cache" / "parts2whole"
    assert str(cache / "densepose") in missing.stderr + missing.stdout
    assert "site-packages" not in missing.stderr + missing.stdout
    made = _run(installed, "-m", "parts2whole", "pose", str(photo), "-o", "map.png", "--weights", "tiny")
    assert made.returncode == 0, made.stderr
    assert (installed["work"] / "map.png").is_file()
    assert any(path.is_relative_to(cache) for path in _files_under(installed["home"]))
    assert _files_under(installed["venv"]) == before, "preprocessing wrote inside the environment"


def test_a_checkout_keeps_its_downloads_in_its_weights_folder():
    """`make` exports P2W_WEIGHTS_DIR=<checkout>/weights (app.py defaults to the same when started by hand)."""
    env = {key: value for key, value in os.environ.items() if key != "P2W_WEIGHTS_DIR"}
    shown = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "show-weights-dir"],
                           input="show-weights-dir:\n\t@echo $$P2W_WEIGHTS_DIR\n", cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert Path(shown.stdout.strip()) == REPO_ROOT / "weights"
    assert re.search(r'os\.environ\.setdefault\(\s*"P2W_WEIGHTS_DIR"', (REPO_ROOT / "app.py").read_text())


def test_docker_keeps_everything_on_the_data_volume(monkeypatch):
    from parts2whole.core import weights

    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"P2W_WEIGHTS_DIR=/data/weights\b", dockerfile)
    assert re.search(r"HF_HOME=/data/huggingface\b", dockerfile)
    monkeypatch.setenv("P2W_WEIGHTS_DIR", "/data/weights")
    assert weights.weights_dir() == Path("/data/weights")
