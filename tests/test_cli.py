"""`python -m parts2whole generate`: help, one-line errors with exit code 2, a real run on the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from app_fixtures import REPO_ROOT, app_env, example_file
from parts2whole.cli import EXIT_BAD_INPUT, main


def test_help_explains_parts_pose_and_output(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--face", "--hair-or-headwear", "--upper-body-clothes", "--lower-body-clothes",
                   "--whole-body-clothes", "--shoes", "--mask-face", "--pose", "--prompt", "--seed", "--steps",
                   "--weights", "-o"):
        assert option in text
    assert "DensePose" in text and "json" in text.lower()


@pytest.mark.parametrize("argv", [
    ["generate", "--face", "face.png"],  # no pose
    ["generate", "--pose", str(example_file("pose"))],  # no part
    ["generate", "--face", "/nonexistent/face.png", "--pose", str(example_file("pose"))],
    ["generate", "--face", str(example_file("face")), "--pose", str(example_file("pose")), "--height", "100",
     "--weights", "tiny"],
    ["generate", "--mask-face", str(example_file("face")), "--shoes", str(example_file("shoes")),
     "--pose", str(example_file("pose"))],
    ["generate", "--face", str(example_file("face")), "--pose", str(example_file("pose")), "--steps", "many"],
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "error:" in lines[0] and "Traceback" not in captured.err


def test_generate_on_the_tiny_model_writes_images_and_parameters(tmp_path):
    output = tmp_path / "results" / "portrait.png"
    command = [sys.executable, "-m", "parts2whole", "generate", "--weights", "tiny",
               "--face", str(example_file("face")), "--upper-body-clothes", str(example_file("upper_body_clothes")),
               "--mask-face", str(example_file("face")), "--pose", str(example_file("pose")),
               "--prompt", "a man in a red shirt", "--seed", "3", "--steps", "2", "--height", "64", "--width", "64",
               "--num-images", "2", "-o", str(output)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=app_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    images = [tmp_path / "results" / "portrait_0.png", tmp_path / "results" / "portrait_1.png"]
    for path in images:
        assert Image.open(path).size == (64, 64)
    parameters = json.loads((tmp_path / "results" / "portrait.json").read_text())
    assert parameters["seed"] == 3 and parameters["steps"] == 2 and parameters["prompt"] == "a man in a red shirt"
    assert parameters["parts"] == ["face", "upper body clothes"] and parameters["masked_parts"] == ["face"]
    assert parameters["outputs"] == ["portrait_0.png", "portrait_1.png"] and parameters["tiny_model"] is True
    assert str(images[0]) in completed.stdout
    assert "Denoising" in completed.stderr  # progress is shown


def test_generate_validates_the_request_once_and_hands_that_very_request_to_the_studio(tmp_path, monkeypatch):
    """The front door validates (before the model loads) and passes the validated request on unchanged."""
    from parts2whole import studio
    from parts2whole.cli import generate as generate_command
    from parts2whole.studio import inputs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(REPO_ROOT / "weights"))
    loaded, generated = [], []

    def recording_load(given):
        loaded.append(inputs.load_request(given))
        return loaded[-1]

    real_generate = studio.Studio.generate

    def recording_generate(self, request, **kwargs):
        generated.append(request)
        return real_generate(self, request, **kwargs)

    monkeypatch.setattr(generate_command, "load_request", recording_load)
    monkeypatch.setattr(generate_command.studio.Studio, "generate", recording_generate)
    code = main(["generate", "--weights", "tiny", "--face", str(example_file("face")), "--pose",
                 str(example_file("pose")), "--seed", "4", "--steps", "1", "--height", "64", "--width", "64",
                 "-q", "-o", str(tmp_path / "out.png")])
    assert code == 0 and len(loaded) == 1 and len(generated) == 1
    assert generated[0] is loaded[0] and loaded[0].seed == 4 and list(loaded[0].references) == ["face"]


def test_inputs_of_a_generation_load_into_a_validated_request_with_the_defaults_of_generate():
    from parts2whole.cli import build_parser
    from parts2whole.core.errors import Parts2WholeInputError
    from parts2whole.studio.inputs import GenerationInputs, load_request

    given = GenerationInputs(parts={"face": str(example_file("face"))}, masks={"face": str(example_file("face"))},
                             pose=str(example_file("pose")), steps="3", seed="7")  # text, as in a CSV manifest
    request = load_request(given)
    assert (request.steps, request.seed) == (3, 7) and set(request.masks) == {"face"}
    assert request.structure.mode == "RGB" and request.validated() == request
    args = build_parser().parse_args(["generate", "--face", "f.png", "--pose", "p.png"])
    plain = GenerationInputs(parts={"face": "f.png"}, pose="p.png")
    for name in ("prompt", "negative_prompt", "seed", "steps", "guidance", "height", "width", "num_images",
                 "fusion_blocks", "scheduler"):
        assert getattr(plain, name) == getattr(args, name), name
    assert plain.files() == {"face": "f.png", "pose": "p.png"}
    with pytest.raises(Parts2WholeInputError, match="no image for that part"):
        load_request(GenerationInputs(masks={"face": str(example_file("face"))}, pose=str(example_file("pose"))))
    with pytest.raises(Parts2WholeInputError, match="Steps must be a whole number from 1 to 150"):
        load_request(GenerationInputs(parts={"face": str(example_file("face"))}, pose=str(example_file("pose")),
                                      steps=0))
