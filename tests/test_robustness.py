"""Bad files and bad parameters thrown at the Python API (the studio), the CLI and the served UI.

Each bad input ends in a clear message (the project's `Parts2WholeInputError` in Python; one stderr line and
exit code 2 on the command line; a `gr.Error` through the served `/generate`), never a traceback, and the
app keeps serving. Valid-but-odd files (16-bit, CMYK, palette with transparency, grayscale, EXIF-rotated,
animated) simply work. Decided and documented in docs/limits.md ("Limits"): a file under 8 px on a side (1x1)
is refused with a message; a 1x1 PIL image handed to the Python API is accepted (it is resized).
Also here: out-of-memory becomes a "try a smaller size" message and the studio keeps working, and a
cancelled generation frees the model.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch
from PIL import Image

from app_fixtures import REPO_ROOT, WEIGHTS_DIR, app_env, example_file
from bad_files import bad_file_bytes, odd_file_bytes, write_files
from test_studio import FakeEncoding
from parts2whole import studio as studio_module
from parts2whole.cli import EXIT_BAD_INPUT, main as cli_main
from parts2whole.core.errors import GenerationCancelled, GenerationOutOfMemory, Parts2WholeInputError
from parts2whole.core.labels import PART_LABELS
from parts2whole.studio import GenerationRequest, Studio
from preprocess.images import load_image, load_mask

#: Every bad file is judged within this many seconds (header checks, no model work).
SECONDS_PER_BAD_FILE = 2.0


def assert_clear(message: str) -> None:
    assert len(message) > 20, message
    assert "Traceback" not in message and 'File "' not in message, message


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("bad"), bad_file_bytes())


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("odd"), odd_file_bytes())


def small_request(**overrides) -> GenerationRequest:
    values = dict(references={"face": Image.open(example_file("face"))}, structure=Image.open(example_file("pose")),
                  prompt="a person", seed=1, steps=1, height=64, width=64)
    values.update(overrides)
    return GenerationRequest(**values)


# ----------------------------------------------------------------------------------------- (a) Python API


@pytest.mark.parametrize("name", sorted(bad_file_bytes()))
def test_bad_file_is_a_clear_input_error_as_image_and_as_mask(name, bad_files):
    started = time.perf_counter()
    with pytest.raises(Parts2WholeInputError) as error:
        load_image(bad_files[name], what="face image")
    assert_clear(str(error.value))
    with pytest.raises(Parts2WholeInputError) as error:
        load_mask(bad_files[name], (96, 128), what="face mask")
    assert_clear(str(error.value))
    assert time.perf_counter() - started < SECONDS_PER_BAD_FILE


def test_bad_files_say_what_is_wrong(bad_files):
    messages = {}
    for name, path in bad_files.items():
        with pytest.raises(Parts2WholeInputError) as error:
            load_image(path)
        messages[name] = str(error.value)
    assert "empty" in messages["zero_byte.png"]
    assert "damaged" in messages["truncated.png"] or "cut short" in messages["truncated.png"]
    assert "SVG" in messages["drawing.svg"] and "PDF" in messages["document.pdf"]
    assert "megapixels" in messages["bomb_header.png"]
    assert "at least 8 px" in messages["one_pixel.png"]
    assert "not an image" in messages["notes.txt"]


@pytest.mark.parametrize("name", sorted(odd_file_bytes()))
def test_odd_but_valid_file_loads_upright_as_rgb_and_as_a_mask(name, odd_files):
    image = load_image(odd_files[name], what="face image")
    assert image.mode in ("RGB", "RGBA") and min(image.size) >= 8
    mask = load_mask(odd_files[name], image.size, what="face mask").mask
    assert mask.mode == "L" and mask.size == image.size
    if name == "exif_rotated.jpg":
        assert image.size == (128, 96)  # stored 96x128, shown rotated a quarter turn


def test_odd_but_valid_files_generate_through_the_studio(odd_files, tiny_studio):
    """All of them as parts of two generations (six parts at most per generation)."""
    names = sorted(odd_files)
    for chunk in (names[:6], names[6:]):
        references = {label: load_image(odd_files[name]) for label, name in zip(PART_LABELS, chunk)}
        result = tiny_studio.generate(small_request(references=references))
        assert result.images[0].size == (64, 64) and result.request.parameters()["parts"] == list(references)


BAD_REQUESTS = {
    "no parts": dict(references={}),
    "parts not a mapping": dict(references=[Image.new("RGB", (64, 64))]),
    "unknown label": dict(references={"tail": Image.new("RGB", (64, 64))}),
    "duplicate label": dict(references={"top": Image.new("RGB", (64, 64)),
                                        "upper body clothes": Image.new("RGB", (64, 64))}),
    "a path instead of an image": dict(references={"face": "face.png"}),
    "bytes instead of an image": dict(references={"face": b"\x89PNG\r\n"}),
    "huge image": dict(references={"face": Image.new("1", (8000, 6000))}),
    "mask without image": dict(masks={"shoes": Image.new("L", (64, 64), 255)}),
    "empty mask": dict(masks={"face": Image.new("L", (64, 64), 0)}),
    "mask of another shape": dict(masks={"face": Image.new("L", (256, 32), 255)}),
    "mask not an image": dict(masks={"face": 3}),
    "masks not a mapping": dict(masks=[1, 2]),
    "no pose": dict(structure=None),
    "pose is a path": dict(structure="pose.png"),
    "height not a multiple of 8": dict(height=100),
    "width too small": dict(width=8),
    "height too large": dict(height=4096),
    "height is text": dict(height="tall"),
    "steps 0": dict(steps=0),
    "steps huge": dict(steps=10**9),
    "steps fractional": dict(steps=2.5),
    "steps is text": dict(steps="many"),
    "steps None": dict(steps=None),
    "guidance NaN": dict(guidance_scale=float("nan")),
    "guidance infinite": dict(guidance_scale=float("inf")),
    "guidance negative": dict(guidance_scale=-1.0),
    "guidance huge": dict(guidance_scale=1e9),
    "guidance is text": dict(guidance_scale="strong"),
    "seed negative": dict(seed=-1),
    "seed too large": dict(seed=2**40),
    "seed is text": dict(seed="lucky"),
    "seed True": dict(seed=True),
    "num images 0": dict(num_images=0),
    "num images 99": dict(num_images=99),
    "fusion blocks unknown": dict(fusion_blocks="everything"),
    "prompt not text": dict(prompt=42),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_is_a_clear_input_error_before_any_model_work(name):
    calls = []
    studio = Studio(loader=lambda weights, choice: calls.append(1),
                    resolver=lambda spec: studio_module.ResolvedWeights(path="none", name="none"), device="cpu")
    with pytest.raises(Parts2WholeInputError) as error:
        studio.generate(small_request(**BAD_REQUESTS[name]))
    assert_clear(str(error.value))
    assert not calls  # refused before the model is loaded


def test_adjustments_come_back_as_notes(tiny_studio):
    result = tiny_studio.generate(small_request(structure=Image.new("RGB", (200, 50)), prompt="word " * 120))
    notes = " ".join(result.notes)
    assert "stretched" in notes and "tokens" in notes


@pytest.mark.parametrize("prompt", ["", "女性、赤いシャツ 👗 élégante", "a\x00b\nc"])
def test_empty_and_non_ascii_prompts_work(prompt, tiny_studio):
    assert tiny_studio.generate(small_request(prompt=prompt, negative_prompt=prompt)).images


def test_full_non_binary_and_rgb_masks_work(tiny_studio):
    image = Image.open(example_file("face"))
    masks = {"face": Image.new("L", image.size, 255),  # full
             "upper body clothes": Image.linear_gradient("L").resize(image.size),  # soft, non-binary
             "shoes": Image.new("RGB", image.size, (255, 255, 255))}  # another mode
    result = tiny_studio.generate(small_request(references={label: image for label in masks}, masks=masks))
    assert result.images and result.request.parameters()["masked_parts"] == ["face", "upper body clothes", "shoes"]


# ----------------------------------------------------------------------------------------- out of memory, cancel


class _FailingOncePipeline:
    """Raises `error` on its first denoising call, then behaves (like a GPU that ran out of memory once)."""

    structure_kind = "densepose"

    def __init__(self, error: BaseException):
        self.error = error

    def encode_checked(self, references, height, width, fusion_blocks):
        return FakeEncoding(torch.zeros(len(references.images), 4), tuple(references.labels))

    def generate_checked(self, request, *, callback_on_step_end, **kwargs):
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        latents = torch.zeros(request.settings.num_images_per_prompt, 4, request.height // 8, request.width // 8)
        for step in range(request.settings.num_inference_steps):
            callback_on_step_end(self, step, 999 - step, {"latents": latents})
        return type("Output", (), {"images": latents})()

    def decode_latents(self, latents, output_type="pil"):
        return [Image.new("RGB", (latents.shape[3] * 8, latents.shape[2] * 8)) for _ in range(latents.shape[0])]


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("MPS backend out of memory (MPS allocated: 9.00 GB)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 123"),
    MemoryError(),
], ids=["cuda", "mps", "cpu", "MemoryError"])
def test_out_of_memory_suggests_a_smaller_size_and_the_studio_keeps_serving(error):
    pipe = _FailingOncePipeline(error)
    studio = Studio(loader=lambda weights, choice: pipe, device="cpu",
                    resolver=lambda spec: studio_module.ResolvedWeights(path="fake", name="fake"))
    with pytest.raises(GenerationOutOfMemory) as caught:
        studio.generate(small_request(steps=2, height=1024, width=768, num_images=2))
    message = str(caught.value)
    assert isinstance(caught.value, Parts2WholeInputError)  # the UI and CLI show it as a fixable input problem
    assert "Out of memory" in message and "smaller output size" in message and "fewer parts" in message
    assert "1024x768" in message
    assert_clear(message)
    assert studio.generate(small_request(steps=2)).images  # the next request runs


def test_other_runtime_errors_are_not_called_out_of_memory():
    pipe = _FailingOncePipeline(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    studio = Studio(loader=lambda weights, choice: pipe, device="cpu",
                    resolver=lambda spec: studio_module.ResolvedWeights(path="fake", name="fake"))
    with pytest.raises(RuntimeError, match="shapes"):
        studio.generate(small_request())


def test_a_cancelled_generation_stops_within_a_step_and_frees_the_model(tiny_studio):
    steps_done = []

    def progress(update):
        if update.stage == studio_module.STAGE_DENOISING and update.step:
            steps_done.append(update.step)

    with pytest.raises(GenerationCancelled):
        tiny_studio.generate(small_request(steps=50, seed=3), progress=progress,
                             cancelled=lambda: len(steps_done) >= 2)
    assert len(steps_done) == 2
    # The lock is free: another thread's generation runs at once.
    results = []
    worker = threading.Thread(target=lambda: results.append(tiny_studio.generate(small_request(steps=1))))
    worker.start()
    worker.join(timeout=60)
    assert results and results[0].images


def test_a_request_cancelled_while_waiting_never_starts():
    pipe = _FailingOncePipeline(None)
    studio = Studio(loader=lambda weights, choice: pipe, device="cpu",
                    resolver=lambda spec: studio_module.ResolvedWeights(path="fake", name="fake"))
    with pytest.raises(GenerationCancelled):
        studio.generate(small_request(), cancelled=lambda: True)


# ----------------------------------------------------------------------------------------- (b) the CLI


def _cli(argv, capsys) -> tuple[int, str]:
    try:
        code = cli_main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def _assert_one_clear_line(code: int, err: str) -> str:
    assert code == EXIT_BAD_INPUT, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name", sorted(bad_file_bytes()))
@pytest.mark.parametrize("role", ["part", "mask", "pose"])
def test_cli_bad_file_is_one_line_and_exit_2(name, role, bad_files, capsys, tmp_path):
    face, pose, bad = str(example_file("face")), str(example_file("pose")), str(bad_files[name])
    argv = {"part": ["--face", bad, "--pose", pose],
            "mask": ["--face", face, "--mask-face", bad, "--pose", pose],
            "pose": ["--face", face, "--pose", bad]}[role]
    line = _assert_one_clear_line(*_cli(["generate", "--weights", "tiny", *argv, "-o", str(tmp_path / "o.png")], capsys))
    assert bad in line or name in line  # says which file


CLI_BAD_SETTINGS = [
    ["--steps", "0"], ["--steps", "100000"], ["--steps", "many"], ["--guidance", "nan"], ["--guidance", "-2"],
    ["--seed", "-1"], ["--seed", str(2**40)], ["--height", "100"], ["--width", "4096"], ["--num-images", "0"],
    ["--fusion-blocks", "all"], ["-o", "out.gif"],
]


@pytest.mark.parametrize("settings", CLI_BAD_SETTINGS, ids=[" ".join(s) for s in CLI_BAD_SETTINGS])
def test_cli_bad_setting_is_one_line_and_exit_2(settings, capsys, monkeypatch):
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    argv = ["generate", "--weights", "tiny", "--face", str(example_file("face")), "--pose", str(example_file("pose")),
            "-q", *settings]
    _assert_one_clear_line(*_cli(argv, capsys))


def test_cli_unwritable_output_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = ["generate", "--weights", "tiny", "--face", str(example_file("face")), "--pose", str(example_file("pose")),
            "-q", "--steps", "1", "--height", "64", "--width", "64", "-o", str(blocker / "out.png")]
    line = _assert_one_clear_line(*_cli(argv, capsys))
    assert "-o" in line


def test_cli_as_a_process_bad_file_and_bad_setting(bad_files, tmp_path):
    """The real entry point: exit code 2 and a single stderr line (nothing printed by imports or logging)."""
    for extra in (["--face", str(bad_files["truncated.png"])], ["--face", str(example_file("face")), "--guidance", "nan"]):
        command = [sys.executable, "-m", "parts2whole", "generate", "--weights", "tiny", *extra,
                   "--pose", str(example_file("pose")), "-o", str(tmp_path / "o.png")]
        completed = subprocess.run(command, cwd=REPO_ROOT, env=app_env(), capture_output=True, text=True, timeout=120)
        _assert_one_clear_line(completed.returncode, completed.stderr)
        assert completed.stdout == ""



# ----------------------------------------------------------------------------------------- safe serving, docs


RESTRICTED_UNPICKLER = REPO_ROOT / "preprocess" / "densepose" / "checkpoint.py"
#: Everything the served app runs: the entry, the package front, and the layers under the UI (every subpackage).
SERVING_SOURCES = [REPO_ROOT / "app.py", *sorted((REPO_ROOT / "parts2whole").glob("*.py")),
                   *(path for layer in ("core", "model", "studio", "ui", "examples")
                     for path in sorted((REPO_ROOT / "parts2whole" / layer).rglob("*.py"))),
                   *sorted((REPO_ROOT / "preprocess").rglob("*.py"))]


def test_no_user_path_can_reach_a_shell_and_nothing_is_unpickled():
    """The code that serves people runs no shell and loads weights only from safetensors or with
    `torch.load(weights_only=True)`."""
    import ast

    for path in SERVING_SOURCES:
        source = path.read_text()
        for needle in ("subprocess", "os.system", "os.popen", "shell=True", "pickle.load", "trust_remote_code=True"):
            if needle == "pickle.load" and path == RESTRICTED_UNPICKLER:
                continue  # names pickle.load only to say why it is not used; test_densepose.py tests its unpickler
            assert needle not in source, f"{path.name} uses {needle}"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                assert safe, f"{path.name}:{node.lineno}: torch.load without weights_only=True"


def test_every_hub_download_defaults_to_a_commit_not_a_branch():
    """A `*_REVISION` default that names a branch would let a repository change what users download."""
    import ast
    import re

    revisions = {}
    for path in SERVING_SOURCES:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.endswith("REVISION"):
                        revisions[f"{path.name}:{target.id}"] = node.value.value
    assert len(revisions) >= 5, revisions  # Parts2Whole, VAE, DWPose, parser, SAM
    for name, value in revisions.items():
        assert isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}", value), f"{name} = {value!r} is not a commit"


def test_documented_limits_match_the_code():
    from parts2whole.core.labels import MAX_REFERENCES
    from parts2whole.ui.launch import MAX_UPLOAD_MB
    from parts2whole.ui.settings import MAX_QUEUE_SIZE
    from parts2whole.model.validation import MAX_IMAGE_PIXELS
    from preprocess.images import MAX_FILE_BYTES, MIN_IMAGE_SIDE

    page = (REPO_ROOT / "docs" / "limits.md").read_text()
    assert "## Limits" in page, "docs/limits.md must keep its Limits section"
    section = page.split("## Limits", 1)[1].split("\n## ", 1)[0]
    expected = [f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels", f"{MAX_UPLOAD_MB} MB", f"{MAX_FILE_BYTES // 2**20} MB",
                f"{MAX_REFERENCES} parts", f"{MIN_IMAGE_SIDE} px", f"{studio_module.MIN_SIDE}",
                f"{studio_module.MAX_SIDE}", f"multiples of {studio_module.SIZE_MULTIPLE}", f"{studio_module.MAX_STEPS}",
                f"{studio_module.MAX_IMAGES}", "77", f"{MAX_QUEUE_SIZE}"]
    for text in expected:
        assert text in section, f"docs/limits.md should say {text!r}"


def test_sixteen_bit_and_float_images_given_to_the_api_are_scaled_not_clipped():
    grey16 = Image.new("I;16", (64, 64), 30000)  # about 117 in 8 bits; clipping would make it white
    floats = Image.new("F", (64, 64), 0.5)  # 0..1 floats: about 128
    request = small_request(references={"face": grey16, "shoes": floats}).validated()
    assert request.references["face"].mode == "RGB" and request.references["face"].getpixel((0, 0)) == (117, 117, 117)
    assert request.references["shoes"].getpixel((0, 0)) == (128, 128, 128)


def test_a_sixteen_bit_mask_is_scaled_not_clipped():
    face = Image.open(example_file("face"))
    mask = Image.new("I;16", face.size, 0)
    mask.paste(65535, (0, 0, face.width // 2, face.height))  # left half white, right half black
    mask.paste(20000, (face.width // 2, 0, face.width, face.height))  # below half-scale: "ignore"
    request = small_request(masks={"face": mask}).validated()
    fitted = request.masks["face"]
    assert fitted.getpixel((0, 0)) == 255 and fitted.getpixel((face.width - 1, 0)) < 128
