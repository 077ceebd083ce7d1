"""One weights folder: P2W_WEIGHTS_DIR (the studio's, /data/weights in Docker) holds the preprocessing
weights too; the older PARTS2WHOLE_WEIGHTS_DIR still moves the preprocessing weights alone."""

from pathlib import Path

from parts2whole import studio
from preprocess import weights


def test_the_studio_folder_holds_the_preprocessing_weights(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv(studio.WEIGHTS_DIR_ENV, str(tmp_path / "data"))
    assert weights.weights_dir() == studio.weights_dir() == tmp_path / "data"


def test_the_preprocessing_only_variable_wins_where_set(monkeypatch, tmp_path):
    monkeypatch.setenv(studio.WEIGHTS_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "pre"))
    assert weights.weights_dir() == tmp_path / "pre"


def test_without_either_it_is_the_project_folder(monkeypatch):
    monkeypatch.delenv(studio.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    assert weights.weights_dir() == Path(weights.__file__).resolve().parents[1] / "weights"
