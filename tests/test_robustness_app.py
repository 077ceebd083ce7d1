"""The served app (tiny model, through `gradio_client`) under bad files, bad parameters and odd requests.

Every bad input gives the person a clear message (our own text, not Gradio's anonymous "the upstream app
raised an exception", never a traceback); the server keeps serving; valid-but-odd files work; uploads are
capped; nothing outside Gradio's cache and the project's assets is served.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from PIL import Image

from app_fixtures import FAST_SIZE, REPO_ROOT, example_file, shared_app_url
from bad_files import bad_file_bytes, odd_file_bytes, write_files

gradio_client = pytest.importorskip("gradio_client")
handle = gradio_client.handle_file

#: Gradio's text when a handler raised something other than gr.Error (what people must never see).
ANONYMOUS_ERROR = "upstream Gradio app has raised an exception"

#: What each bad file's message must mention.
EXPECTED_WORDS = {
    "zero_byte.png": "empty", "truncated.png": "damaged", "corrupt.png": "not an image",
    "not_an_image.png": "not an image", "notes.txt": "not an image", "drawing.svg": "SVG", "document.pdf": "PDF",
    "bomb_header.png": "megapixels", "one_pixel.png": "at least 8 px", "strip.png": "longer than wide",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return gradio_client.Client(shared_app_url(), verbose=False,
                                download_files=str(tmp_path_factory.mktemp("downloads")))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("bad"), bad_file_bytes())


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("odd"), odd_file_bytes())


def assert_clear_app_error(error: BaseException, *words: str) -> str:
    message = str(error)
    assert ANONYMOUS_ERROR not in message, message
    assert "Traceback" not in message and 'File "' not in message, message
    assert len(message) > 15, message
    for word in words:
        assert word in message, message
    return message


def quick_generate(client, **inputs):
    values = dict(face=handle(str(example_file("face"))), pose=handle(str(example_file("pose"))),
                  randomize_seed=False, seed=1, steps=1, size=FAST_SIZE)
    values.update(inputs)
    return client.predict(**values, api_name="/generate")


def test_bad_files_in_every_role_get_clear_messages_and_the_server_keeps_serving(client, bad_files):
    assert EXPECTED_WORDS.keys() == bad_files.keys()
    for role, who in (("face", "face image"), ("face_mask", "face mask"), ("pose", "pose map")):
        for name, path in bad_files.items():
            with pytest.raises(Exception) as error:
                quick_generate(client, **{role: handle(str(path))})
            assert_clear_app_error(error.value, EXPECTED_WORDS[name], who)
    gallery, _bundle, status, _seed = quick_generate(client)
    assert "Done" in status and len(gallery) == 1


def test_bad_files_in_the_slot_endpoints_get_clear_messages(client, bad_files):
    for name, path in bad_files.items():
        with pytest.raises(Exception) as error:
            client.predict(handle(str(path)), api_name="/face_mask_preview")
        assert_clear_app_error(error.value, EXPECTED_WORDS[name])
        with pytest.raises(Exception) as error:
            client.predict(handle(str(path)), handle(str(example_file("face"))), api_name="/face_mask_upload")
        message = assert_clear_app_error(error.value)
        # The upload button takes image types only: Gradio itself turns other suffixes away, clearly.
        assert EXPECTED_WORDS[name] in message or "Invalid file type" in message, message


def test_valid_but_odd_files_generate(client, odd_files):
    """All of them, as the parts of two generations (six slots per generation)."""
    slots = ["face", "hair_or_headwear", "upper_body_clothes", "lower_body_clothes", "whole_body_clothes", "shoes"]
    names = sorted(odd_files)
    for chunk in (names[:6], names[6:]):
        parts = {slot: handle(str(odd_files[name])) for slot, name in zip(slots, chunk)}
        gallery, _bundle, status, _seed = quick_generate(client, **parts)
        assert "Done" in status, chunk
        assert Image.open(gallery[0]["image"]).size == (128, 192)


def test_a_mask_that_selects_nothing_or_has_another_shape_is_explained(client, tmp_path):
    face = Image.open(example_file("face"))
    empty = tmp_path / "empty.png"
    Image.new("L", face.size, 0).save(empty)
    with pytest.raises(Exception) as error:
        quick_generate(client, face_mask=handle(str(empty)))
    assert_clear_app_error(error.value, "empty")
    other_shape = tmp_path / "other-shape.png"
    Image.new("L", (face.width * 3, face.height), 255).save(other_shape)
    with pytest.raises(Exception) as error:
        quick_generate(client, face_mask=handle(str(other_shape)))
    assert_clear_app_error(error.value, "shape")


BAD_SETTINGS = {
    "steps 0": dict(steps=0),
    "steps huge": dict(steps=100_000),
    "steps fractional": dict(steps=2.5),
    "guidance negative": dict(guidance=-1.0),
    "guidance huge": dict(guidance=1e9),
    "seed negative": dict(seed=-5),
    "seed too large": dict(seed=2**40),
    "unknown size": dict(size="999 × 999"),
    "too many images": dict(num_images=99),
    "no images": dict(num_images=0),
    "unknown fusion blocks": dict(fusion_blocks="everything"),
    "no parts": dict(face=None),
    "no pose": dict(pose=None),
    "a mask without its image": dict(shoes_mask=handle(str(example_file("shoes")))),
}


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_bad_settings_get_clear_messages(name, client):
    with pytest.raises(Exception) as error:
        quick_generate(client, **BAD_SETTINGS[name])
    message = assert_clear_app_error(error.value)
    if name == "a mask without its image":
        assert "Shoes" in message and "no image" in message


@pytest.mark.parametrize("prompt", ["", "女性、赤いシャツ 👗 élégante", "word " * 150])
def test_odd_prompts_work_and_a_long_one_is_noted(prompt, client):
    _gallery, _bundle, status, _seed = quick_generate(client, prompt=prompt, negative_prompt=prompt)
    assert "Done" in status
    if len(prompt) > 500:
        assert "tokens" in status  # truncated to the text encoder's 77 tokens, with a note


def test_a_stretched_pose_map_is_noted(client, tmp_path):
    wide = tmp_path / "wide-pose.png"
    Image.open(example_file("pose")).resize((400, 100)).save(wide)
    _gallery, _bundle, status, _seed = quick_generate(client, pose=handle(str(wide)))
    assert "stretched" in status


def test_uploads_above_the_limit_are_refused(client, tmp_path):
    from parts2whole.ui.launch import MAX_UPLOAD_MB

    big = tmp_path / "big.png"
    with open(big, "wb") as handle_:
        handle_.truncate(MAX_UPLOAD_MB * 1024 * 1024 + 1024)
    with pytest.raises(Exception) as error:
        quick_generate(client, face=handle(str(big)))
    assert "Traceback" not in str(error.value)
    assert "Done" in quick_generate(client)[2]


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_nothing_outside_the_cache_and_assets_is_served():
    base = shared_app_url()
    for path in (REPO_ROOT / "app.py", REPO_ROOT / "README.md", "/etc/passwd", REPO_ROOT / "weights"):
        assert _status_of(f"{base}gradio_api/file={path}") in (403, 404), path
    assert _status_of(f"{base}gradio_api/file={example_file('face')}") == 200  # the examples are served


def test_launch_settings_cap_uploads_and_serve_no_extra_paths():
    import app
    from parts2whole.ui.launch import MAX_UPLOAD_MB, launch_kwargs

    args = app.parse_args([])
    kwargs = launch_kwargs(args.host, args.port, args.share)
    assert kwargs["max_file_size"] == f"{MAX_UPLOAD_MB}mb"
    assert not kwargs.get("allowed_paths") and kwargs["show_error"] is False


def test_out_of_memory_in_the_generate_handler_is_a_message_and_the_next_run_works(tmp_path):
    """In-process: the app's Generate handler over a studio whose first run exhausts GPU memory."""
    import gradio as gr
    import torch

    from parts2whole import studio as studio_module
    from parts2whole.ui.generate import make_generate
    from parts2whole.ui.settings import DEFAULT_SIZE
    from test_robustness import _FailingOncePipeline

    pipe = _FailingOncePipeline(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"))
    studio = studio_module.Studio(loader=lambda weights, choice: pipe, device="cpu",
                                  resolver=lambda spec: studio_module.ResolvedWeights(path="fake", name="fake"))
    generate = make_generate(studio)
    inputs = dict(face=str(example_file("face")), pose=str(example_file("pose")), randomize_seed=False, seed=3,
                  steps=2, size=DEFAULT_SIZE)
    with pytest.raises(gr.Error) as error:
        generate(**inputs)
    message = assert_clear_app_error(error.value, "Out of memory", "smaller output size")
    assert "768x512" in message
    gallery, _bundle, status, _session, seed = generate(**inputs)
    assert "Done" in status and seed == 3 and len(gallery) == 1
