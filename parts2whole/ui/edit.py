"""Edit a photo: drop a photo (or press *Edit this result*), tick the parts to change, drop each new part
into its part slot above, see the region over the photo, press Edit. The studio keeps every pixel outside
the region; the result comes with a bundle whose README command redoes the edit.

The region over the photo and its refinement (clicks, brush, Undo, Reset) are `edit_region`'s. The new
parts, their masks, the optional pose map and the settings are the page's own (the same slots
and form as Generate), so the `/edit` endpoint takes `/generate`'s keywords plus `source`, `change`,
`region` and `strength`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
import zipfile
from pathlib import Path

import gradio as gr
from PIL import Image

from parts2whole import studio as studio_module
from parts2whole.core.errors import Parts2WholeInputError
from parts2whole.core.labels import PART_LABELS, UI_SLOT_NAMES
from parts2whole.studio import DEFAULT_SCHEDULER
from parts2whole.studio.edit_request import changed_labels
from parts2whole.studio.edit_sources import ServiceAnalysis, prepare_edit, result_inputs
from parts2whole.studio.preprocessing import PreprocessingService

from .bundle import BUNDLE_ROOT, remove_old_bundles
from .feedback import friendly_errors
from .edit_region import (CLICK_HINT, REGION, SOURCE, RegionTools, build_region_brush, build_region_clicks,
                          new_region_state, wire_region)
from .generate import cancel_check, generation_errors, output_size, read_inputs
from .settings import DEFAULT_SIZE, GPU_CONCURRENCY
from .uploads import Uploads

CHANGE_CHOICES = [(UI_SLOT_NAMES[label], label.replace(" ", "_")) for label in PART_LABELS]


@dataclasses.dataclass
class EditPanel:
    source: gr.Image
    change: gr.CheckboxGroup
    region: gr.Image
    strength: gr.Slider
    preview: gr.Image
    edit_button: gr.Button
    from_result: gr.Button
    gallery: gr.Gallery
    status: gr.Markdown
    bundle: gr.DownloadButton
    region_tools: RegionTools


def build_edit_from_result_button() -> gr.Button:
    return gr.Button("Edit this result", elem_id="edit-this-result", size="sm")


def build_edit_panel(from_result: gr.Button) -> EditPanel:
    """The *Edit a photo* section (inside the page's gr.Blocks)."""
    with gr.Accordion("Edit a photo: change one part, keep the rest", open=False, elem_id="edit-panel"):
        gr.Markdown("Drop a photo of a person (or press *Edit this result*), tick what to change and drop the new "
                    "part into its slot above. Everything outside the region stays as it is.")
        with gr.Row(equal_height=False):
            source = gr.Image(label="Photo to edit", type="filepath", elem_id="edit-source", height=300)
            with gr.Column():
                preview = gr.Image(label="Region to change (click to refine it)", type="pil", interactive=False,
                                   elem_id="edit-preview", height=300, format="png", buttons=[])
                click_mode, message, undo_button, reset_button = build_region_clicks()
        change = gr.CheckboxGroup(CHANGE_CHOICES, label="Change", elem_id="edit-change")
        gr.Markdown(CLICK_HINT, elem_classes=["brush-hint"])
        with gr.Accordion("Region and strength", open=False):
            region = gr.Image(label="Region in use (white = change; empty: found on the photo; clicks and the "
                              "brush write here)", type="filepath", elem_id="edit-region", height=200, format="png")
            editor, brush_mode = build_region_brush()
            strength = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Strength", elem_id="edit-strength",
                                 info="1 redraws the region from noise; lower keeps more of the old part; 0 keeps it")
        edit_button = gr.Button("Edit", variant="primary", elem_id="edit-button")
        status = gr.Markdown("", elem_id="edit-status")
        gallery = gr.Gallery(label="Edited", columns=2, height=360, object_fit="contain", format="png",
                             elem_id="edit-gallery", interactive=False)
        bundle = gr.DownloadButton("Download edit bundle (.zip)", elem_id="edit-bundle")
    tools = RegionTools(click_mode, message, gr.State(new_region_state()), undo_button, reset_button, editor,
                        brush_mode)
    return EditPanel(source, change, region, strength, preview, edit_button, from_result, gallery, status, bundle,
                     tools)


def make_edit(studio: studio_module.Studio, service: PreprocessingService):
    """The Edit handler: `/generate`'s parameters plus source, change, region and strength."""

    def edit(face=None, face_mask=None, hair_or_headwear=None, hair_or_headwear_mask=None,
             upper_body_clothes=None, upper_body_clothes_mask=None, lower_body_clothes=None,
             lower_body_clothes_mask=None, whole_body_clothes=None, whole_body_clothes_mask=None, shoes=None,
             shoes_mask=None, pose=None, prompt="", negative_prompt="", seed=0, randomize_seed=True,
             steps=studio_module.DEFAULT_STEPS, guidance=studio_module.DEFAULT_GUIDANCE, size=DEFAULT_SIZE,
             num_images=1, fusion_blocks=studio_module.DEFAULT_FUSION_BLOCKS, scheduler=DEFAULT_SCHEDULER,
             source=None, change=None, region=None, strength=1.0, uploads=None, edited_result=None,
             progress=gr.Progress()):
        files = dict(zip(PART_LABELS, (face, hair_or_headwear, upper_body_clothes, lower_body_clothes,
                                       whole_body_clothes, shoes)))
        mask_files = dict(zip(PART_LABELS, (face_mask, hair_or_headwear_mask, upper_body_clothes_mask,
                                            lower_body_clothes_mask, whole_body_clothes_mask, shoes_mask)))
        progress(0.0, desc=studio_module.STAGE_PREPROCESSING)
        with generation_errors():
            if not source:
                raise Parts2WholeInputError("Drop the photo to edit first (or press Edit this result).")
            uploads = Uploads.of(uploads)
            photo = uploads.image(SOURCE, source, what="photo to edit")
            inputs = read_inputs(uploads, files, mask_files, pose)
            height, width = output_size(size)
            made_from = (edited_result or {}).get("inputs")
            if made_from is not None and edited_result.get("key") != _pixels_key(photo):
                made_from = None  # another picture than the result whose inputs the session holds
            request = prepare_edit(
                ServiceAnalysis(service), photo, **_ticked_parts(inputs, change),
                change=change or None, region=uploads.mask(REGION, region, photo.size, what="region").mask if region else None,
                pose=inputs.structure, prompt=prompt or "", negative_prompt=negative_prompt or "",
                seed=None if randomize_seed else (0 if seed is None else seed), steps=steps, guidance_scale=guidance,
                height=height, width=width, num_images=num_images, fusion_blocks=fusion_blocks,
                scheduler=scheduler or DEFAULT_SCHEDULER, strength=strength, result=made_from)
            result = studio.edit(request, progress=lambda update: progress(update.fraction, desc=update.text),
                                 cancelled=cancel_check())
        request = result.request
        status = (f"✓ **Edited** {', '.join(UI_SLOT_NAMES[label] for label in request.changed)} in {result.seconds:.1f} s"
                  f" · seed **{request.seed}** · strength {request.strength:g} · kept: "
                  f"{', '.join(UI_SLOT_NAMES[label] for label in request.origin.get('kept', [])) or 'nothing'}")
        dropped = request.origin.get("dropped") or {}
        if dropped:
            status += "  \nℹ️ " + "; ".join(f"{UI_SLOT_NAMES[label]} {why}" for label, why in dropped.items())
        gallery = [(image, f"edit · seed {request.seed}") for image in result.images]
        return gallery, str(write_edit_bundle(result)), status

    return edit


def _ticked_parts(inputs, change) -> dict:
    """The new parts and masks of the ticked parts only: the part slots are shared with Generate, so a
    slot may still hold a picture of a part the person keeps (none ticked: every filled slot is changed)."""
    ticked = changed_labels(change)
    keep = (lambda label: label in ticked) if ticked else (lambda label: True)
    return {"new_parts": {label: image for label, image in inputs.references.items() if keep(label)},
            "new_masks": {label: mask for label, mask in inputs.masks.items() if keep(label)}}


def write_edit_bundle(result) -> Path:
    """A zip with the source, region, every reference and mask, the pose map, the results, parameters.json
    and a README whose command redoes the edit from the bundle's folder."""
    remove_old_bundles()
    request = result.request
    folder = BUNDLE_ROOT / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / f"parts2whole-edit-seed{request.seed}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("inputs/source.png", studio_module.png_bytes(request.source))
        bundle.writestr("inputs/region.png", studio_module.png_bytes(request.region))
        bundle.writestr("inputs/pose.png", studio_module.png_bytes(request.structure))
        for label, image in request.references.items():
            stem = label.replace(" ", "_")
            bundle.writestr(f"inputs/{stem}.png", studio_module.png_bytes(image))
            if request.masks.get(label) is not None:
                bundle.writestr(f"masks/{stem}.png", studio_module.png_bytes(request.masks[label]))
        for index, image in enumerate(result.images):
            bundle.writestr(f"results/result_{index}.png", studio_module.png_bytes(image))
        bundle.writestr("parameters.json", studio_module.parameters_json(result.parameters))
        bundle.writestr("README.txt", edit_replay(request))
    return path


def edit_replay(request) -> str:
    """The README of an edit bundle: the `edit` command that redoes it (source, region and pose given, so
    only the kept parts are cut again, by the same parser)."""
    parts = " ".join(f"--{label.replace(' ', '-')} inputs/{label.replace(' ', '_')}.png"
                     + (f" --mask-{label.replace(' ', '-')} masks/{label.replace(' ', '_')}.png"
                        if request.masks.get(label) is not None else "") for label in request.changed)
    return ("Made with the Parts2Whole studio (edit mode). parameters.json holds every setting; to redo it "
            "from this folder:\n\n"
            f"python -m parts2whole edit inputs/source.png --change {','.join(request.changed).replace(' ', '-')} "
            f"{parts} --region inputs/region.png --pose inputs/pose.png --strength {request.strength:g} "
            f"--prompt {json.dumps(request.prompt)} --negative-prompt {json.dumps(request.negative_prompt)} "
            f"--seed {request.seed} --steps {request.steps} --guidance {request.guidance_scale} "
            f"--height {request.height} --width {request.width} --num-images {request.num_images} "
            f"--fusion-blocks {request.fusion_blocks} --scheduler {request.scheduler} -o results/again.png\n")


def _pixels_key(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def first_result(gallery, bundle=None):
    """*Edit this result*: the gallery's first image as the photo to edit, and (per user, in `gr.State`)
    what it was made from, read back from its bundle, keyed by its pixels: an edit of exactly that picture
    then reuses the generation's references and pose (and their cached encodings)."""
    if not gallery:
        raise gr.Error("Generate first: there is no result to edit yet.", print_exception=False)
    item = gallery[0]
    item = item[0] if isinstance(item, (list, tuple)) else item
    if isinstance(item, dict):
        item = (item.get("image") or item).get("path")
    made_from = None
    if bundle and zipfile.is_zipfile(bundle):
        folder = BUNDLE_ROOT / uuid.uuid4().hex
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(folder)
        made_from = result_inputs(folder / "results" / "result_0.png")
    state = {"key": _pixels_key(Image.open(item)), "inputs": made_from} if made_from is not None else None
    return item, state


def wire_edit(page, studio: studio_module.Studio, service: PreprocessingService, form_inputs: list) -> None:
    """Edit (one at a time on the GPU, API name `/edit`), the region preview and its tools, *Edit this result*.

    `form_inputs`: Generate's parts, masks, pose and settings, in `make_edit`'s parameter order."""
    panel = page.edit
    edited_result = gr.State(None)  # per user: what the result sent by *Edit this result* was made from
    inputs = form_inputs + [panel.source, panel.change, panel.region, panel.strength, page.uploads, edited_result]
    panel.edit_button.click(make_edit(studio, service), inputs, [panel.gallery, panel.bundle, panel.status],
                            api_name="edit", concurrency_limit=GPU_CONCURRENCY, concurrency_id="gpu",
                            show_progress_on=[panel.gallery])
    wire_region(panel, page.uploads, service)
    panel.from_result.click(friendly_errors(first_result), [page.results.gallery, page.results.bundle],
                            [panel.source, edited_result], api_visibility="private", concurrency_limit=None)
