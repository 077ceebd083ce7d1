"""Background removal through rembg with a tiny U^2-Net-signature ONNX model (preprocess.tiny) exported here."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from parts2whole.core.errors import CheckpointError
from preprocess import background
from preprocess.background import BackgroundRemover, remove_background
from preprocess.tiny import SIDE_OUTPUTS, U2NET_SIDE, TinyRedSubjectNet
from tolerances import assert_masks_agree


@pytest.fixture()
def rembg_home(tmp_path, monkeypatch):
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    return tmp_path / "rembg"


@pytest.fixture()
def tiny_model_path(rembg_home):
    path = rembg_home / "models" / "u2net_custom" / "tiny.onnx"
    path.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TinyRedSubjectNet().eval(), (torch.zeros(1, 3, U2NET_SIDE, U2NET_SIDE),), str(path),
            input_names=["input.1"], output_names=[f"d{i}" for i in range(SIDE_OUTPUTS)], dynamo=False,
        )
    return path


def _red_person_on_blue(width=200, height=300):
    photo = np.zeros((height, width, 3), dtype=np.uint8)
    photo[:] = (20, 40, 230)
    photo[60:240, 50:150] = (230, 30, 20)
    return Image.fromarray(photo)


def test_alpha_is_the_subject_mask(tiny_model_path):
    cutout = remove_background(_red_person_on_blue(), BackgroundRemover(model_path=tiny_model_path))
    assert cutout.mode == "RGBA" and cutout.size == (200, 300)
    alpha = np.asarray(cutout.getchannel("A"))
    assert alpha[100:200, 70:130].min() > 200  # inside the subject
    assert alpha[:40].max() < 50 and alpha[:, 170:].max() < 50  # background
    assert np.array_equal(np.asarray(cutout.convert("RGB")), np.asarray(_red_person_on_blue()))  # colours untouched


def test_existing_transparency_is_kept(tiny_model_path):
    photo = _red_person_on_blue().convert("RGBA")
    alpha = np.full((300, 200), 255, dtype=np.uint8)
    alpha[:, :100] = 0  # the left half was already cut away
    photo.putalpha(Image.fromarray(alpha))
    mask = BackgroundRemover(model_path=tiny_model_path).subject_mask(photo)
    values = np.asarray(mask)
    assert values[100:200, 60:95].max() == 0 and values[100:200, 105:140].min() > 200


def test_session_is_created_once_across_threads(tiny_model_path, monkeypatch):
    import rembg

    created = []
    real_new_session = rembg.new_session

    def counting_new_session(*args, **kwargs):
        created.append(1)
        return real_new_session(*args, **kwargs)

    monkeypatch.setattr(rembg, "new_session", counting_new_session)
    remover = BackgroundRemover(model_path=tiny_model_path)
    masks = []
    threads = [threading.Thread(target=lambda: masks.append(np.asarray(remover.subject_mask(_red_person_on_blue())))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1 and len(masks) == 3
    for mask in masks[1:]:
        assert_masks_agree(mask, masks[0])


def test_custom_model_outside_the_rembg_folder_is_a_clear_error(tmp_path, rembg_home):
    outside = tmp_path / "elsewhere.onnx"
    outside.write_bytes(b"not used")
    with pytest.raises(CheckpointError, match="REMBG_HOME"):
        BackgroundRemover(model_path=outside).subject_mask(_red_person_on_blue())


def test_default_model_is_rembgs_human_segmentation():
    remover = BackgroundRemover()
    assert remover.model_name == "u2net_human_seg" and remover.model_path is None
    assert background.DEFAULT_BACKGROUND_MODEL == "u2net_human_seg"
