"""Samplers: every name generates on the tiny model, reproduces from its seed, is recorded and replays;
DDIM stays the official sampler; unknown names get a clear message in the API, the studio and the CLI."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from app_fixtures import WEIGHTS_DIR, example_file
from parts2whole import Parts2WholeInputError
from parts2whole.model import schedulers as scheduler_table
from parts2whole.cli import EXIT_BAD_INPUT, main
from parts2whole.model.schedulers import SCHEDULER_NAMES, build_scheduler, canonical_scheduler_name
from parts2whole.studio import GenerationRequest

SIZE = 64
STEPS = 3
#: Separate runs of the same computation agree to float32 rounding; different samplers differ far more.
SAME_ATOL = 1e-5
DIFFERENT_MIN = 1e-3


def inputs() -> dict:
    return dict(references={"face": Image.open(example_file("face")),
                            "upper body clothes": Image.open(example_file("upper_body_clothes"))},
                structure=Image.open(example_file("pose")), prompt="a man in a red shirt", height=SIZE, width=SIZE)


def generate(pipe, seed: int = 5, **overrides) -> np.ndarray:
    arguments = inputs() | dict(num_inference_steps=STEPS, output_type="np",
                                generator=torch.Generator().manual_seed(seed)) | overrides
    return pipe(**arguments).images


@pytest.fixture(scope="module")
def ddim_image(tiny_pipe):
    return generate(tiny_pipe, scheduler="ddim")


# ------------------------------------------------------------------------------------------ the table


def test_every_sampler_keeps_the_checkpoint_noise_schedule(tiny_pipe):
    """All are built from the checkpoint's config: its linear betas, not SD's scaled_linear."""
    assert tiny_pipe.scheduler.config.beta_schedule == "linear"
    for name in SCHEDULER_NAMES:
        scheduler = build_scheduler(name, tiny_pipe.scheduler.config)
        assert scheduler.config.beta_schedule == "linear", name
        torch.testing.assert_close(scheduler.alphas_cumprod, tiny_pipe.scheduler.alphas_cumprod)


def test_dpm_solver_entries_are_dpmpp_second_order_with_and_without_karras(tiny_pipe):
    plain = build_scheduler("dpmpp_2m", tiny_pipe.scheduler.config)
    karras = build_scheduler("dpmpp_2m_karras", tiny_pipe.scheduler.config)
    for scheduler in (plain, karras):
        assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
        assert scheduler.config.algorithm_type == "dpmsolver++" and scheduler.config.solver_order == 2
    assert not plain.config.use_karras_sigmas and karras.config.use_karras_sigmas
    # Karras sigmas from a config that already has them on cannot leak into the plain entry.
    assert not build_scheduler("dpmpp_2m", karras.config).config.use_karras_sigmas
    assert type(build_scheduler("unipc", plain.config)).__name__ == "UniPCMultistepScheduler"
    assert type(build_scheduler("euler_a", plain.config)).__name__ == "EulerAncestralDiscreteScheduler"


@pytest.mark.parametrize("spelling, name", [("DDIM", "ddim"), ("dpmpp-2m", "dpmpp_2m"), (" UniPC ", "unipc"),
                                            ("Euler A", "euler_a"), ("dpmpp_2m_karras", "dpmpp_2m_karras")])
def test_names_are_read_case_and_dash_insensitively(spelling, name):
    assert canonical_scheduler_name(spelling) == name


@pytest.mark.parametrize("bad", ["heun", "", None, 3])
def test_unknown_names_list_the_choices(bad):
    with pytest.raises(Parts2WholeInputError, match="choose one of: ddim, dpmpp_2m, dpmpp_2m_karras, unipc, euler_a"):
        canonical_scheduler_name(bad)


def test_step_arguments_follow_what_each_step_accepts(tiny_pipe):
    generator = torch.Generator()
    kwargs = {name: scheduler_table.step_kwargs(build_scheduler(name, tiny_pipe.scheduler.config), generator, 0.3)
              for name in SCHEDULER_NAMES}
    assert kwargs["ddim"] == {"eta": 0.3, "generator": generator}
    assert kwargs["euler_a"] == {"generator": generator}
    assert kwargs["unipc"] == {}


# ------------------------------------------------------------------------------------------ the pipeline


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_sampler_generates_and_reproduces_from_its_seed(tiny_pipe, ddim_image, name):
    first = generate(tiny_pipe, scheduler=name)
    again = generate(tiny_pipe, scheduler=name)
    assert first.shape == (1, SIZE, SIZE, 3) and np.isfinite(first).all()
    np.testing.assert_allclose(again, first, atol=SAME_ATOL, rtol=0)
    if name != "ddim":  # the sampler is really used
        assert np.abs(first - ddim_image).max() > DIFFERENT_MIN


def test_ancestral_sampling_draws_its_noise_from_the_seed(tiny_pipe):
    assert np.abs(generate(tiny_pipe, seed=5, scheduler="euler_a") - generate(tiny_pipe, seed=6, scheduler="euler_a")).max() \
        > DIFFERENT_MIN
    # The same initial latents, another generator: only the per-step noise differs, and it must show.
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    a = generate(tiny_pipe, seed=1, scheduler="euler_a", latents=latents)
    b = generate(tiny_pipe, seed=2, scheduler="euler_a", latents=latents)
    assert np.abs(a - b).max() > DIFFERENT_MIN


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_the_unet_sees_unit_scale_input_at_the_first_step(tiny_pipe, name):
    """Each sampler's initial noise level and input scaling are applied: Euler's noise starts at sigma_max
    (init_noise_sigma ~ 19) and its model input is divided by sqrt(sigma^2 + 1), so the UNet always gets
    inputs of standard deviation ~1; forgetting either gives ~19 or ~0.05."""
    seen = []
    handle = tiny_pipe.unet.register_forward_pre_hook(lambda _module, args: seen.append(args[0].float().std().item()))
    try:
        tiny_pipe(**(inputs() | dict(height=128, width=128)), num_inference_steps=STEPS, output_type="latent",
                  generator=torch.Generator().manual_seed(3), scheduler=name)
    finally:
        handle.remove()
    assert 0.8 < seen[0] < 1.25, seen


def test_ddim_by_name_is_the_default_sampler(tiny_pipe, ddim_image):
    np.testing.assert_allclose(generate(tiny_pipe), ddim_image, atol=SAME_ATOL, rtol=0)


def test_ddim_eta_adds_seeded_noise(tiny_pipe, ddim_image):
    noisy = generate(tiny_pipe, scheduler="ddim", eta=1.0)
    np.testing.assert_allclose(generate(tiny_pipe, scheduler="ddim", eta=1.0), noisy, atol=SAME_ATOL, rtol=0)
    assert np.abs(noisy - ddim_image).max() > DIFFERENT_MIN
    with pytest.raises(Parts2WholeInputError, match="eta"):
        generate(tiny_pipe, eta=2.0)


def test_unknown_sampler_is_refused_before_any_work(tiny_pipe):
    with pytest.raises(Parts2WholeInputError, match="Unknown scheduler 'heun'; choose one of: ddim"):
        generate(tiny_pipe, scheduler="heun")


def test_a_scheduler_assigned_to_the_pipeline_is_used_when_none_is_named(tiny_pipe):
    """The diffusers habit `pipe.scheduler = X.from_config(pipe.scheduler.config)` works, and naming a
    sampler never changes `pipe.scheduler`."""
    original = tiny_pipe.scheduler
    expected = generate(tiny_pipe, scheduler="unipc")
    assert tiny_pipe.scheduler is original and type(original).__name__ == "DDIMScheduler"
    try:
        tiny_pipe.scheduler = build_scheduler("unipc", original.config)
        np.testing.assert_allclose(generate(tiny_pipe), expected, atol=SAME_ATOL, rtol=0)
    finally:
        tiny_pipe.scheduler = original


def test_concurrent_generations_with_different_samplers_do_not_interfere(tiny_pipe):
    names = ("dpmpp_2m", "euler_a", "unipc", "ddim")
    serial = {name: generate(tiny_pipe, scheduler=name) for name in names}
    results, errors = {}, []

    def run(name):
        try:
            results[name] = generate(tiny_pipe, scheduler=name)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and set(results) == set(names)
    for name in names:
        np.testing.assert_allclose(results[name], serial[name], atol=SAME_ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ studio and CLI


def studio_request(**overrides) -> GenerationRequest:
    values = inputs() | dict(seed=7, steps=2)
    values.update(overrides)
    return GenerationRequest(**values)


def test_studio_records_the_sampler_and_replays_from_the_parameters(tiny_studio):
    result = tiny_studio.generate(studio_request(scheduler="DPMPP-2M"))
    parameters = json.loads(json.dumps(result.parameters))  # what parameters.json holds
    assert parameters["scheduler"] == "dpmpp_2m" and result.request.scheduler == "dpmpp_2m"
    fields = {"prompt", "negative_prompt", "seed", "steps", "guidance_scale", "height", "width", "num_images",
              "fusion_blocks", "scheduler"}
    replayed = tiny_studio.generate(GenerationRequest(references=inputs()["references"], structure=inputs()["structure"],
                                                      **{key: parameters[key] for key in fields}))
    np.testing.assert_allclose(np.asarray(replayed.images[0], dtype=np.int16),
                               np.asarray(result.images[0], dtype=np.int16), atol=1, rtol=0)
    ddim = tiny_studio.generate(studio_request())
    assert ddim.parameters["scheduler"] == "ddim"
    assert np.abs(np.asarray(ddim.images[0], dtype=np.int16) - np.asarray(result.images[0], dtype=np.int16)).max() > 2


def test_studio_refuses_an_unknown_sampler(tiny_studio):
    with pytest.raises(Parts2WholeInputError, match="choose one of: ddim"):
        tiny_studio.generate(studio_request(scheduler="lms"))


def test_cli_unknown_scheduler_is_one_line_and_exit_2(capsys):
    code = main(["generate", "--face", str(example_file("face")), "--pose", str(example_file("pose")),
                 "--scheduler", "heun", "--weights", "tiny"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == EXIT_BAD_INPUT and len(lines) == 1, captured.err
    assert "Unknown scheduler 'heun'; choose one of: ddim, dpmpp_2m" in lines[0] and "Traceback" not in captured.err


def test_cli_scheduler_lands_in_the_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("P2W_WEIGHTS_DIR", str(WEIGHTS_DIR))
    output = tmp_path / "out.png"
    code = main(["generate", "--weights", "tiny", "--face", str(example_file("face")), "--pose", str(example_file("pose")),
                 "--scheduler", "euler_a", "--seed", "2", "--steps", "2", "--height", "64", "--width", "64", "-q",
                 "-o", str(output)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(output.with_suffix(".json").read_text())["scheduler"] == "euler_a"
    assert Image.open(output).size == (64, 64)
