"""One weights-folder rule (parts2whole.core.weights): P2W_WEIGHTS_DIR, else the deprecated
PARTS2WHOLE_WEIGHTS_DIR (same meaning), else the per-user cache; every consumer asks the same function."""

from pathlib import Path

import pytest

from parts2whole.core import weights


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (weights.WEIGHTS_DIR_ENV, weights.LEGACY_WEIGHTS_DIR_ENV, weights.XDG_CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_the_variable_names_the_folder(clean_env, tmp_path):
    clean_env.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "data"))
    assert weights.weights_dir() == tmp_path / "data"


def test_the_old_variable_is_an_alias_used_only_when_the_new_one_is_unset(clean_env, tmp_path, caplog):
    clean_env.setenv(weights.LEGACY_WEIGHTS_DIR_ENV, str(tmp_path / "old"))
    clean_env.setattr(weights, "_warned_legacy", False)
    with caplog.at_level("WARNING"):
        assert weights.weights_dir() == tmp_path / "old"
    assert weights.WEIGHTS_DIR_ENV in caplog.text
    clean_env.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "new"))
    assert weights.weights_dir() == tmp_path / "new"


def test_without_a_variable_it_is_the_user_cache_never_the_package(clean_env, tmp_path):
    folder = weights.weights_dir()
    assert folder == tmp_path / "home" / ".cache" / "parts2whole"
    package_root = Path(weights.__file__).resolve().parents[2]
    assert not folder.resolve().is_relative_to(package_root)
    clean_env.setenv(weights.XDG_CACHE_ENV, str(tmp_path / "xdg"))
    assert weights.weights_dir() == tmp_path / "xdg" / "parts2whole"


def test_every_consumer_uses_the_one_rule(clean_env, tmp_path):
    """The studio's tiny checkpoint, the preprocessing downloads and the examples cache all follow it."""
    from parts2whole import examples, studio
    from preprocess.densepose import checkpoint

    clean_env.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "w"))
    clean_env.delenv("P2W_EXAMPLES_DIR", raising=False)
    assert studio.weights_dir() == tmp_path / "w"
    assert examples.default_cache_root().is_relative_to(tmp_path / "w")
    assert checkpoint._converted_path(tmp_path / "elsewhere" / "m.pkl").is_relative_to(tmp_path / "w")
