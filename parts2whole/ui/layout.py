"""Where everything sits on the page: the intro and banner, the examples, the six part slots, the Pose
slot, the prompt and settings, Generate and the results, Edit a photo. Components only: `events` wires them."""

from __future__ import annotations

import dataclasses

import gradio as gr

from parts2whole import examples as examples_module
from parts2whole import studio as studio_module
from parts2whole.core.labels import PART_LABELS
from parts2whole.studio import DEFAULT_SCHEDULER, FAST_SCHEDULER, FAST_STEPS, SCHEDULERS
from parts2whole.studio.preprocessing import PreprocessingService

from .edit import EditPanel, build_edit_from_result_button, build_edit_panel
from .galleries import Galleries, build_examples, build_pose_gallery
from .generate import new_session
from .pose import PoseSlot, build_pose_slot
from .settings import (DEFAULT_SIZE, PRESET_DEFAULT, PRESET_FAST, SIZE_PRESETS, TINY_DEFAULT_SIZE,
                       TINY_DEFAULT_STEPS)
from .slots import PartSlot, build_slot
from .theme import INTRO, POSE_HELP
from .uploads import Uploads


@dataclasses.dataclass
class Settings:
    """The form besides the pictures: prompts, the speed preset and the advanced settings."""

    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    speed_preset: gr.Radio
    seed: gr.Number
    randomize_seed: gr.Checkbox
    steps: gr.Slider
    guidance: gr.Slider
    size: gr.Dropdown
    num_images: gr.Slider
    fusion_blocks: gr.Radio
    scheduler: gr.Dropdown
    default_steps: int


@dataclasses.dataclass
class Results:
    """Generate and Stop, the status line, the results, the inputs used, the bundle and the seed used."""

    generate_button: gr.Button
    stop_button: gr.Button
    status: gr.Markdown
    gallery: gr.Gallery
    used: gr.Gallery
    bundle: gr.DownloadButton
    reuse_seed: gr.Button
    last_seed: gr.Number


@dataclasses.dataclass
class Page:
    """Every component the events use, and the per-user states: the session, the decoded uploads."""

    session: gr.State
    uploads: gr.State
    galleries: Galleries
    slots: list[PartSlot]
    pose: PoseSlot
    settings: Settings
    results: Results
    edit: EditPanel | None = None


def defaults(studio: studio_module.Studio) -> tuple[str, int]:
    """The size and steps a page starts with: small and few with the tiny random model."""
    if studio.is_tiny:
        return TINY_DEFAULT_SIZE, TINY_DEFAULT_STEPS
    return DEFAULT_SIZE, studio_module.DEFAULT_STEPS


def banner_text(studio: studio_module.Studio, service: PreprocessingService) -> str:
    """The yellow banner: which model is loaded when it is not the real one, and the preprocessing models."""
    banner = studio.banner()
    default_size, default_steps = defaults(studio)
    if banner and studio.is_tiny:
        banner += (f" To keep it quick, it starts at {default_size.split(' ·')[0]} px and {default_steps} steps "
                   "(change them under *Advanced settings*).")
    if banner and service.banner_note():
        banner += " " + service.banner_note()
    return banner or ""


def build_page(studio: studio_module.Studio, service: PreprocessingService,
               library: examples_module.ExampleLibrary) -> Page:
    """The page's components, top to bottom (inside a gr.Blocks)."""
    session = gr.State(new_session())
    uploads = gr.State(Uploads())  # per user: each upload decoded once
    gr.Markdown(INTRO)
    banner = banner_text(studio, service)
    gr.Markdown(banner, visible=bool(banner), elem_id="tiny-model-banner")
    galleries = build_examples(library)
    slots: list[PartSlot] = []
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            gr.Markdown("### Reference parts · each optional, at least one")
            for row_labels in (PART_LABELS[:3], PART_LABELS[3:]):
                with gr.Row(equal_height=False):
                    slots.extend(build_slot(label) for label in row_labels)
        with gr.Column(scale=2):
            pose = build_pose_slot()
            gr.Markdown(POSE_HELP, elem_id="pose-help")
            build_pose_gallery(galleries)
            settings = build_settings(*defaults(studio))
            results = build_results()
            from_result = build_edit_from_result_button()
    edit = build_edit_panel(from_result)
    return Page(session, uploads, galleries, slots, pose, settings, results, edit)


def build_settings(default_size: str, default_steps: int) -> Settings:
    prompt = gr.Textbox("", label="Prompt", lines=2, elem_id="prompt",
                        placeholder="e.g. a woman in a red shirt, high quality, realistic")
    negative_prompt = gr.Textbox("", label="Negative prompt", lines=1, elem_id="negative-prompt",
                                 placeholder="e.g. blurry, low quality, deformed")
    speed_preset = gr.Radio(
        [(f"Default · {SCHEDULERS[DEFAULT_SCHEDULER].label}, {default_steps} steps", PRESET_DEFAULT),
         (f"Fast · {SCHEDULERS[FAST_SCHEDULER].label}, {FAST_STEPS} steps", PRESET_FAST)],
        value=PRESET_DEFAULT, label="Speed", elem_id="speed-preset",
        info="Sets the sampler and the steps (both under Advanced settings)")
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced-settings"):
        with gr.Row():
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=studio_module.MAX_SEED,
                             elem_id="seed")
            randomize_seed = gr.Checkbox(label="Random seed", value=True, elem_id="random-seed",
                                         info="Untick to reuse the seed above")
        steps = gr.Slider(1, 100, value=default_steps, step=1, label="Steps", elem_id="steps",
                          info="More steps: slower, often finer")
        guidance = gr.Slider(1.0, 10.0, value=studio_module.DEFAULT_GUIDANCE, step=0.1,
                             label="Guidance", elem_id="guidance", info="How strongly to follow the prompt")
        size = gr.Dropdown(list(SIZE_PRESETS), value=default_size, label="Output size (height × width)", elem_id="size")
        num_images = gr.Slider(1, studio_module.MAX_IMAGES, value=1, step=1, label="Number of images",
                               elem_id="num-images")
        fusion_blocks = gr.Radio(list(studio_module.FUSION_BLOCK_CHOICES), value=studio_module.DEFAULT_FUSION_BLOCKS,
                                 label="Fusion blocks", info="UNet blocks that look at the parts: full (closest) or midup",
                                 elem_id="fusion-blocks")
        scheduler = gr.Dropdown([(choice.label, name) for name, choice in SCHEDULERS.items()],
                                value=DEFAULT_SCHEDULER, label="Sampler", elem_id="scheduler",
                                allow_custom_value=True,  # an unknown name gets the studio's message
                                info="DDIM is the official one; DPM-Solver++ and UniPC need fewer steps")
    return Settings(prompt, negative_prompt, speed_preset, seed, randomize_seed, steps, guidance, size, num_images,
                    fusion_blocks, scheduler, default_steps)


def build_results() -> Results:
    with gr.Row():
        generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button", scale=4)
        stop_button = gr.Button("Stop", variant="stop", elem_id="stop-button", scale=1, min_width=80)
    status = gr.Markdown("", label="Status", elem_id="run-status")
    gallery = gr.Gallery(label="Result", columns=2, height=420, object_fit="contain", format="png",
                         elem_id="result-gallery", buttons=["download", "fullscreen"], interactive=False)
    used = gr.Gallery(label="Masks and pose used", columns=4, height=160, object_fit="contain", format="png",
                      elem_id="used-inputs", buttons=["fullscreen"], interactive=False, visible=False)
    with gr.Row():
        bundle = gr.DownloadButton("Download bundle (.zip)", elem_id="download-bundle")
        reuse_seed = gr.Button("Reuse last seed", size="lg", elem_id="reuse-seed")
    last_seed = gr.Number(label="Seed used", visible=False, precision=0)
    return Results(generate_button, stop_button, status, gallery, used, bundle, reuse_seed, last_seed)
