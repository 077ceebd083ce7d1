"""What happens when people act: every event of the page wired to its handler, with its API name (what
`gradio_client` calls), its queue (GPU, preprocessing, clicks, or none for cheap previews) and its inputs,
the per-user states included."""

from __future__ import annotations

import gradio as gr

from parts2whole import examples as examples_module
from parts2whole import studio as studio_module
from parts2whole.studio.preprocessing import PreprocessingService

from .edit import wire_edit
from .feedback import friendly_errors
from .galleries import wire_galleries
from .generate import make_generate, make_used_inputs, reuse
from .layout import Page
from .pose import wire_pose
from .settings import GPU_CONCURRENCY, wire_speed_preset
from .slots import wire_slot


def wire_events(demo: gr.Blocks, page: Page, studio: studio_module.Studio, service: PreprocessingService,
                library: examples_module.ExampleLibrary) -> None:
    """Slots, Pose slot, galleries, then Generate and what follows it (inside the page's gr.Blocks)."""
    for slot in page.slots:
        wire_slot(slot, page.uploads, service)
    wire_pose(page.pose, page.settings.size, page.uploads, service)
    wire_galleries(demo, page.galleries, library, [slot.image for slot in page.slots], page.pose.image,
                   page.settings.prompt)
    wire_generate(page, studio, service)
    if page.edit is not None:
        wire_edit(page, studio, service, generate_inputs(page)[0][:-3])  # without session, pose state, uploads


def generate_inputs(page: Page) -> tuple[list, list]:
    """(Generate's inputs, in its parameters' order; the used-inputs strip's inputs)."""
    pictures = []
    for slot in page.slots:
        pictures += [slot.image, slot.mask]
    form = page.settings
    used = pictures + [page.pose.image, page.pose.state, page.uploads]
    inputs = pictures + [page.pose.image, form.prompt, form.negative_prompt, form.seed, form.randomize_seed,
                         form.steps, form.guidance, form.size, form.num_images, form.fusion_blocks, form.scheduler,
                         page.session, page.pose.state, page.uploads]
    return inputs, used


def wire_generate(page: Page, studio: studio_module.Studio, service: PreprocessingService) -> None:
    """Generate (one at a time on the GPU), the inputs used after it, Reuse last seed, the speed preset, Stop."""
    results = page.results
    inputs, used_inputs = generate_inputs(page)
    generated = results.generate_button.click(
        make_generate(studio, service), inputs, [results.gallery, results.bundle, results.status, page.session,
                                                 results.last_seed],
        api_name="generate", concurrency_limit=GPU_CONCURRENCY, concurrency_id="gpu", show_progress_on=[results.gallery])
    generated.success(friendly_errors(make_used_inputs(service)), used_inputs, results.used, api_visibility="private",
                      concurrency_limit=None, show_progress="hidden")
    results.reuse_seed.click(reuse, page.session, [page.settings.seed, page.settings.randomize_seed],
                             api_visibility="private", concurrency_limit=None)
    wire_speed_preset(page.settings.speed_preset, page.settings.scheduler, page.settings.steps,
                      page.settings.default_steps)
    # Stop cancels the running (or waiting) generation; the handler sees it and frees the model.
    results.stop_button.click(None, None, None, cancels=[generated], api_visibility="private", queue=False)
